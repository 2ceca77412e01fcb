//! Custom workloads' interpreters: what judging one member object by a
//! `WorkloadInterpreter`'s CEL health rule costs the agent (the rule is
//! compiled and evaluated on every status change of the object), for the
//! longest expression the API admits and objects with many conditions.

use std::hint::black_box;
use std::time::{Duration, Instant};

use flotilla_api::interpreter::{HealthRule, KindHealthRule};
use flotilla_apps_core::interpreter::{cel_rule, judge_health};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct InterpreterArgs {
    /// Judgements measured per case.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
}

fn object(conditions: usize) -> Value {
    let conditions: Vec<Value> = (0..conditions)
        .map(
            |i| json!({"type": format!("Condition{i}"), "status": "True", "reason": "Fine", "message": "ok"}),
        )
        .chain([json!({"type": "Ready", "status": "True"})])
        .collect();
    json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
        "metadata": {"name": "web", "namespace": "shop", "generation": 4},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 4, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
            "conditions": conditions}})
}

/// A long admitted expression: many comparisons and one list macro.
fn longest_expression() -> String {
    let mut expression =
        String::from("object.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')");
    while expression.len() + 60 < cel_rule::MAX_LENGTH {
        expression.push_str(" && object.status.readyReplicas >= object.spec.replicas");
    }
    expression
}

fn figures(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  {label:<44} p50 {:>8.1}  p99 {:>8.1}  max {:>8.1} µs (n={})",
        us(crate::measure::percentile(&samples, 0.50)),
        us(crate::measure::percentile(&samples, 0.99)),
        us(samples.last().copied().unwrap_or_default()),
        samples.len()
    );
}

pub fn run(args: InterpreterArgs) -> anyhow::Result<bool> {
    if args.samples == 0 {
        anyhow::bail!("--samples must be at least 1");
    }
    let simple = "has(object.status) && object.status.readyReplicas >= object.spec.replicas".to_string();
    let longest = longest_expression();
    if let Err(e) = cel_rule::compile(&longest) {
        anyhow::bail!("the benchmark's long expression is refused: {e}");
    }
    println!("interpreter: one health judgement (compile + evaluate) per status change of a member object");
    for (name, expression) in [("ready count", &simple), (&*format!("{} bytes", longest.len()), &longest)] {
        let rules = vec![KindHealthRule {
            api_version: "apps.kruise.io/v1alpha1".into(),
            kind: "CloneSet".into(),
            rule: HealthRule { expression: expression.clone(), message: None },
        }];
        for conditions in [1usize, 100, 1000] {
            let object = object(conditions);
            let mut samples = Vec::with_capacity(args.samples);
            for _ in 0..args.samples {
                let started = Instant::now();
                black_box(judge_health(black_box(&object), black_box(&rules)));
                samples.push(started.elapsed());
            }
            figures(&format!("{name}, {conditions} conditions"), samples);
        }
    }
    Ok(true)
}
