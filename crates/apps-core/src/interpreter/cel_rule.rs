//! CEL expressions of a `WorkloadInterpreter`, compiled and evaluated with
//! bounds: an expression is refused when it is too long, nests too deep,
//! has too many nodes, nests one list macro (`all`, `exists`, `map`,
//! `filter`, ...) inside another, or names a variable other than `object`.
//! CEL has no loops but its macros, so with these bounds an evaluation
//! costs at most linear time in the object's size (which the API server
//! bounds), never runaway.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Context, Program};
use serde_json::Value;

/// The longest expression accepted, in bytes (the CRD says the same).
pub const MAX_LENGTH: usize = 1024;
/// The deepest nesting of brackets accepted (checked before parsing, so the
/// parser's recursion is bounded too).
pub const MAX_BRACKET_DEPTH: usize = 24;
/// The most nodes an expression may have once its macros are expanded.
pub const MAX_NODES: usize = 400;
/// Identifiers an expression may use besides `object`: CEL's type names.
const TYPE_NAMES: &[&str] =
    &["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"];

/// An expression that passed the bounds, ready to evaluate.
#[derive(Debug)]
pub struct Compiled {
    program: Program,
}

/// Compiles `source`, or says why it is refused.
pub fn compile(source: &str) -> Result<Compiled, String> {
    if source.trim().is_empty() {
        return Err("the expression is empty".into());
    }
    if source.len() > MAX_LENGTH {
        return Err(format!(
            "the expression is {} bytes long; at most {MAX_LENGTH} are allowed",
            source.len()
        ));
    }
    let depth = bracket_depth(source);
    if depth > MAX_BRACKET_DEPTH {
        return Err(format!(
            "the expression nests brackets {depth} deep; at most {MAX_BRACKET_DEPTH} are allowed"
        ));
    }
    let program =
        Program::compile(source).map_err(|e| format!("does not compile: {}", one_line(&e.to_string())))?;
    let mut walk = Walk { nodes: 0, bound: Vec::new(), problems: Vec::new() };
    walk.visit(program.expression(), 0);
    if walk.nodes > MAX_NODES {
        walk.problems
            .push(format!("the expression has {} nodes; at most {MAX_NODES} are allowed", walk.nodes));
    }
    if let Some(first) = walk.problems.into_iter().next() {
        return Err(first);
    }
    Ok(Compiled { program })
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Bracket nesting outside string literals (a rough scan: quotes toggle,
/// backslashes escape).
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut deepest, mut quote, mut escaped) = (0usize, 0usize, None::<char>, false);
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

struct Walk {
    nodes: usize,
    /// Variables bound by the enclosing comprehensions.
    bound: Vec<String>,
    problems: Vec<String>,
}

impl Walk {
    fn visit(&mut self, e: &IdedExpr, comprehensions: usize) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return;
        }
        match &e.expr {
            Expr::Ident(name) => {
                let known =
                    name == "object" || self.bound.contains(name) || TYPE_NAMES.contains(&name.as_str());
                if !known {
                    self.problems.push(format!("unknown variable '{name}': only 'object' is defined"));
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target, comprehensions);
                }
                for arg in &call.args {
                    self.visit(arg, comprehensions);
                }
            }
            Expr::Comprehension(c) => {
                if comprehensions >= 1 {
                    self.problems.push(
                        "a list macro (all, exists, exists_one, map, filter) inside another is too costly; \
                         use one level"
                            .into(),
                    );
                    return;
                }
                self.visit(&c.iter_range, comprehensions);
                self.visit(&c.accu_init, comprehensions);
                let before = self.bound.len();
                self.bound.push(c.iter_var.clone());
                self.bound.extend(c.iter_var2.clone());
                self.bound.push(c.accu_var.clone());
                for part in [&c.loop_cond, &c.loop_step, &c.result] {
                    self.visit(part, comprehensions + 1);
                }
                self.bound.truncate(before);
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.visit(element, comprehensions);
                }
            }
            Expr::Map(map) => self.entries(map.entries.iter().map(|e| &e.expr), comprehensions),
            Expr::Struct(s) => self.entries(s.entries.iter().map(|e| &e.expr), comprehensions),
            Expr::Select(select) => self.visit(&select.operand, comprehensions),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entries<'a>(&mut self, entries: impl Iterator<Item = &'a EntryExpr>, comprehensions: usize) {
        for entry in entries {
            match entry {
                EntryExpr::MapEntry(m) => {
                    self.visit(&m.key, comprehensions);
                    self.visit(&m.value, comprehensions);
                }
                EntryExpr::StructField(f) => self.visit(&f.value, comprehensions),
            }
        }
    }
}

/// What an expression gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Bool(bool),
    String(String),
    /// Another type: its CEL type name.
    Other(String),
}

impl Compiled {
    /// Evaluates the expression with `object` bound to `object`.
    pub fn evaluate(&self, object: &Value) -> Result<Outcome, String> {
        let mut context = Context::default();
        context.add_variable_from_value("object", to_cel(object));
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(Outcome::Bool(b)),
            Ok(cel::Value::String(s)) => Ok(Outcome::String(s.to_string())),
            Ok(other) => Ok(Outcome::Other(other.type_of().to_string())),
            Err(e) => Err(one_line(&e.to_string())),
        }
    }
}

/// JSON as CEL sees Kubernetes objects: integers are `int` (not `uint`),
/// so `object.status.readyReplicas >= 3` compares like types.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => {
            let map: HashMap<String, cel::Value> =
                fields.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compile_refusals() {
        let deep = format!("{}true{}", "(".repeat(30), ")".repeat(30));
        let long = format!("object.spec.replicas == 1{}", " ".repeat(MAX_LENGTH));
        let many = format!("object.spec.replicas in [{}]", vec!["1"; 450].join(","));
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ready count", "object.status.readyReplicas >= object.spec.replicas", None),
            (
                "presence and macro",
                "has(object.status) && object.status.conditions.exists(c, c.type == 'Ready')",
                None,
            ),
            ("type names", "type(object.spec.replicas) == int", None),
            ("empty", "  ", Some("empty")),
            ("syntax", "object.status.readyReplicas >=", Some("does not compile")),
            ("unbalanced", "object.status.(", Some("does not compile")),
            ("unknown variable", "self.status.ready", Some("unknown variable 'self'")),
            ("too long", &long, Some("bytes long")),
            ("too deep", &deep, Some("nests brackets 30 deep")),
            ("too many nodes", &many, Some("nodes")),
            (
                "nested macros",
                "object.spec.a.all(x, object.spec.b.exists(y, x == y))",
                Some("inside another"),
            ),
            (
                "quoted brackets do not count",
                "object.metadata.name != '((((((((((((((((((((((((((((((('",
                None,
            ),
        ];
        for (name, source, want) in cases {
            let got = compile(source).err();
            match want {
                None => assert!(got.is_none(), "{name}: {got:?}"),
                Some(fragment) => {
                    let got = got.unwrap_or_else(|| panic!("{name}: compiled"));
                    assert!(got.contains(fragment), "{name}: {got}");
                }
            }
        }
    }

    #[test]
    fn evaluation_over_json() {
        let object = json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2, "ratio": 0.5,
            "conditions": [{"type": "Ready", "status": "False"}]}});
        let cases: &[(&str, Result<Outcome, &str>)] = &[
            ("object.status.readyReplicas >= object.spec.replicas", Ok(Outcome::Bool(false))),
            ("object.status.readyReplicas >= 2", Ok(Outcome::Bool(true))),
            ("object.status.ratio < 1.0", Ok(Outcome::Bool(true))),
            (
                "object.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
                Ok(Outcome::Bool(false)),
            ),
            (
                "'ready ' + string(object.status.readyReplicas) + '/' + string(object.spec.replicas)",
                Ok(Outcome::String("ready 2/3".into())),
            ),
            ("object.spec.replicas", Ok(Outcome::Other("int".into()))),
            ("object.status.missing > 1", Err("No such key")),
        ];
        for (source, want) in cases {
            let got = compile(source).unwrap().evaluate(&object);
            match want {
                Ok(want) => assert_eq!(got.as_ref(), Ok(want), "{source}"),
                Err(fragment) => {
                    let got = got.unwrap_err();
                    assert!(got.contains(fragment), "{source}: {got}");
                }
            }
        }
    }
}
