//! The rollout commands' reads and writes on the hub, around the pure
//! decisions of the sibling modules.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use flotilla_api::rollout::{Rollout, RolloutStrategy, CHANGES_ANNOTATION, HASH_ANNOTATION, ROLLOUT_LABEL};
use flotilla_apps_core::revision::{changes, RevisionContent};
use flotilla_apps_core::rollout_status::pick_strategy;
use flotilla_apps_core::selection::TemplateMeta;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::args::{HistoryArgs, ListRolloutsArgs, NameArgs, StatusArgs, UndoArgs};
use super::control::{decide, Action};
use super::list;
use super::names::{self, Listed, Lookup, Wanted};
use super::render::{self, KeptRevision, StatusView};
use super::undo::{self, Candidate};
use crate::output::{list_document, list_failure, printable, render_document};

/// How often a watch reads the Rollout again.
const POLL: Duration = Duration::from_secs(1);

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// Columns to fit: the terminal's (100 when it does not say); none for a
/// pipe (like kubectl's, lines are not wrapped, for grep).
fn width() -> Option<usize> {
    std::io::stdout()
        .is_terminal()
        .then(|| comfy_table::Table::new().width().map(usize::from).filter(|w| *w >= 40).unwrap_or(100))
}

/// `flotilla rollout VERB NAME -n NS [--kubeconfig ...]` for messages.
fn command_for(args: &NameArgs, name: &str) -> impl Fn(&str) -> String {
    let ns = if args.namespace == "default" { String::new() } else { format!(" -n {}", args.namespace) };
    let hub = args.hub.hint_flags();
    let name = name.to_string();
    move |verb: &str| format!("flotilla rollout {verb} {name}{ns}{hub}")
}

/// The Rollout NAME or KIND/NAME names, or an error saying what is there.
async fn find(client: &Client, args: &NameArgs) -> anyhow::Result<Rollout> {
    let wanted = names::parse(&args.name).map_err(anyhow::Error::msg)?;
    let ns = args.namespace.as_str();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    if let Wanted::Rollout(name) = &wanted {
        if let Some(r) =
            rollouts.get_opt(name).await.with_context(|| format!("reading Rollout {ns}/{name}"))?
        {
            return Ok(r);
        }
    }
    let all =
        rollouts.list(&ListParams::default()).await.with_context(|| format!("listing Rollouts in {ns}"))?;
    let listed: Vec<Listed> = all
        .items
        .iter()
        .map(|r| Listed {
            name: r.name_any(),
            template_kind: r.spec.template.kind.clone(),
            template_name: r.spec.template.name.clone(),
        })
        .collect();
    if let Some(found) = names::find(&wanted, &listed) {
        if let Some(r) = all.items.into_iter().find(|r| r.name_any() == found.name) {
            return Ok(r);
        }
    }
    // Not there: say why.
    let strategies =
        Api::<RolloutStrategy>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
    let template = match &wanted {
        Wanted::Template { kind, name } => match names::builtin(kind) {
            Some((api_version, kind)) => {
                let api = dynamic_api(client, ns, api_version, kind).await?;
                Some((api_version, kind, name.as_str(), api.get_opt(name).await?))
            }
            None => None,
        },
        Wanted::Rollout(_) => None,
    };
    let specs: Vec<(&str, &str, &flotilla_api::rollout::RolloutStrategySpec)> = strategies
        .items
        .iter()
        .map(|s| (ns, s.metadata.name.as_deref().unwrap_or_default(), &s.spec))
        .collect();
    let picked = template.as_ref().and_then(|(api_version, kind, name, object)| {
        let labels = object.as_ref().map(|o| o.labels().clone()).unwrap_or_default();
        let meta = TemplateMeta { api_version, kind, namespace: ns, name, labels: &labels };
        pick_strategy(&specs, &meta).map(str::to_string)
    });
    let strategy_rows: Vec<(String, bool)> =
        specs.iter().map(|(_, n, _)| (n.to_string(), picked.as_deref() == Some(*n))).collect();
    let lookup = Lookup {
        namespace: ns,
        rollouts: &listed,
        strategies: &strategy_rows,
        template_exists: template.as_ref().map(|(_, _, _, o)| o.is_some()),
    };
    bail!("{}", names::not_found(&wanted, &lookup))
}

async fn dynamic_api(
    client: &Client,
    ns: &str,
    api_version: &str,
    kind: &str,
) -> anyhow::Result<Api<DynamicObject>> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, _): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the hub does not serve {kind} ({api_version})"))?;
    Ok(Api::namespaced_with(client.clone(), ns, &resource))
}

fn view<'a>(r: &'a Rollout, ns: &'a str, width: Option<usize>) -> StatusView<'a> {
    StatusView {
        namespace: ns,
        name: r.metadata.name.as_deref().unwrap_or_default(),
        template: &r.spec.template,
        strategy: &r.spec.strategy,
        status: r.status.as_ref(),
        annotations: r.metadata.annotations.as_ref().unwrap_or(&EMPTY),
        now: now(),
        width,
    }
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

pub async fn list(args: ListRolloutsArgs) -> anyhow::Result<bool> {
    let client = args.hub.client().await?;
    let context = client.default_namespace().to_string();
    let api: Api<Rollout> = args.scope.api(client);
    let mut items = api
        .list(&args.list.list_params())
        .await
        .map_err(|e| anyhow!(list_failure("Rollouts", &args.list, e)))?
        .items;
    items.sort_by_key(|r| (r.namespace(), r.name_any()));
    if let Some(text) = render_document(&list_document(&items)?, args.list.output)? {
        println!("{}", text.trim_end());
        return Ok(true);
    }
    if items.is_empty() {
        let place = args.scope.place(&context);
        println!(
            "No Rollouts{} in {place}: the hub writes one for each template a RolloutStrategy selects.",
            args.list.matching()
        );
        return Ok(true);
    }
    let wide = args.list.wide();
    let mut t = render::table(list::header(args.scope.all_namespaces, wide), width());
    let now = now();
    for r in &items {
        t.add_row(list::row(r, args.scope.all_namespaces, wide, now));
    }
    println!("{t}");
    Ok(true)
}

pub async fn status(args: StatusArgs) -> anyhow::Result<bool> {
    let client = args.target.hub.client().await?;
    let ns = args.target.namespace.clone();
    let mut rollout = find(&client, &args.target).await?;
    // The object asked for as json|yaml: printed once, as kubectl get.
    if let Some(text) = render_document(&printable(&rollout)?, args.output)? {
        println!("{}", text.trim_end());
        return Ok(true);
    }
    let terminal = std::io::stdout().is_terminal();
    let watch = args.watch || (terminal && !args.no_watch);
    let done = |r: &Rollout| render::finished(r.status.as_ref());
    if !watch || done(&rollout).is_some() {
        print!("{}", render::status_text(&view(&rollout, &ns, width())));
        return Ok(done(&rollout) != Some(false));
    }
    let name = rollout.name_any();
    let api: Api<Rollout> = Api::namespaced(client, &ns);
    let started = Instant::now();
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let live = terminal.then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stdout());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg}\n{spinner} watching for {elapsed} (Ctrl-C stops watching, not the rollout)",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last_line = String::new();
    let mut trouble: Option<String> = None;
    let outcome = loop {
        if let Some(finished) = done(&rollout) {
            break Ok(finished);
        }
        match &live {
            Some(bar) => {
                let mut text = render::status_text(&view(&rollout, &ns, width()));
                if let Some(t) = &trouble {
                    text.push_str(&format!("\n(cannot read the Rollout: {t})"));
                }
                bar.set_message(text.trim_end().to_string());
            }
            None => {
                let line = render::summary(rollout.status.as_ref());
                if line != last_line {
                    println!("{line}");
                    last_line = line;
                }
            }
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            break Err(anyhow!(
                "rollout {name} is not Complete after {}s: {}",
                args.timeout,
                render::summary(rollout.status.as_ref())
            ));
        }
        tokio::time::sleep(POLL).await;
        match api.get_opt(&name).await {
            Ok(Some(r)) => {
                rollout = r;
                trouble = None;
            }
            Ok(None) => break Err(anyhow!("Rollout {ns}/{name} was deleted (its template is gone?)")),
            // The hub may be restarting: keep trying until the timeout.
            Err(e) => trouble = Some(e.to_string()),
        }
    };
    if let Some(bar) = live {
        bar.finish_and_clear();
    }
    print!("{}", render::status_text(&view(&rollout, &ns, width())));
    outcome
}

async fn kept_revisions(client: &Client, ns: &str, rollout: &str) -> anyhow::Result<Vec<ControllerRevision>> {
    let listed = Api::<ControllerRevision>::namespaced(client.clone(), ns)
        .list(
            &ListParams::default()
                .labels(&format!("{ROLLOUT_LABEL}={}", flotilla_apps_core::binding::label_value(rollout))),
        )
        .await
        .with_context(|| format!("listing the ControllerRevisions of {ns}/{rollout}"))?;
    Ok(listed.items.into_iter().filter(|r| r.annotations().contains_key(HASH_ANNOTATION)).collect())
}

fn hash_of(r: &ControllerRevision) -> String {
    r.annotations().get(HASH_ANNOTATION).cloned().unwrap_or_default()
}

pub async fn history(history: HistoryArgs) -> anyhow::Result<bool> {
    let args = history.target;
    let client = args.hub.client().await?;
    let rollout = find(&client, &args).await?;
    let name = rollout.name_any();
    let mut kept = kept_revisions(&client, &args.namespace, &name).await?;
    kept.sort_by_key(|r| std::cmp::Reverse(r.revision.unwrap_or(0)));
    if let Some(text) = render_document(&list_document(&kept)?, history.output)? {
        println!("{}", text.trim_end());
        return Ok(true);
    }
    if kept.is_empty() {
        println!("No revisions kept for rollout {name} yet.");
        return Ok(true);
    }
    let rows: Vec<KeptRevision> = kept
        .iter()
        .map(|r| KeptRevision {
            number: r.revision.unwrap_or(0),
            hash: hash_of(r),
            created: r.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
            changes: r
                .annotations()
                .get(CHANGES_ANNOTATION)
                .map(|c| c.lines().map(str::to_string).collect())
                .unwrap_or_default(),
        })
        .collect();
    println!(
        "Rollout {}/{name}: {} {}",
        args.namespace, rollout.spec.template.kind, rollout.spec.template.name
    );
    print!("{}", render::history_text(&rows, rollout.status.as_ref(), now(), width()));
    Ok(true)
}

/// How many times a control is decided again when the Rollout changed
/// between the read and the write (the hub writes its status often).
const CONTROL_ATTEMPTS: usize = 5;

pub async fn control(args: NameArgs, action: Action) -> anyhow::Result<bool> {
    let client = args.hub.client().await?;
    let api = Api::<Rollout>::namespaced(client.clone(), &args.namespace);
    for attempt in 1..=CONTROL_ATTEMPTS {
        let rollout = find(&client, &args).await?;
        let name = rollout.name_any();
        let cmd = command_for(&args, &name);
        let annotations = rollout.metadata.annotations.clone().unwrap_or_default();
        let decision =
            decide(action, &name, &cmd, rollout.status.as_ref(), &annotations).map_err(anyhow::Error::msg)?;
        if !decision.annotations.is_empty() {
            // The resourceVersion makes the write fail if the Rollout moved
            // on since it was read (another revision, another wave): then
            // decide again on what it is now.
            let patch = json!({"metadata": {
                "resourceVersion": rollout.metadata.resource_version,
                "annotations": decision.annotations,
            }});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < CONTROL_ATTEMPTS => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("annotating Rollout {}/{name}", args.namespace)))
                }
            }
        }
        println!("{}", decision.said);
        return Ok(true);
    }
    bail!("rollout {}: it kept changing while being annotated; try again", args.name)
}

pub async fn undo(args: UndoArgs) -> anyhow::Result<bool> {
    let target = &args.target;
    let client = target.hub.client().await?;
    let rollout = find(&client, target).await?;
    let name = rollout.name_any();
    let ns = target.namespace.as_str();
    let Some(status) = rollout.status.as_ref().filter(|s| !s.revision.is_empty()) else {
        bail!("rollout {name} has no status yet: no revision to go back to");
    };
    let kept = kept_revisions(&client, ns, &name).await?;
    let contents: Vec<(i64, String, Option<RevisionContent>)> = kept
        .iter()
        .map(|r| (r.revision.unwrap_or(0), hash_of(r), serde_json::from_value(r.data.0.clone()).ok()))
        .collect();
    let candidates: Vec<Candidate> = contents
        .iter()
        .map(|(number, hash, content)| Candidate {
            number: *number,
            hash: hash.clone(),
            manifest: content.as_ref().map(|c| c.manifest.clone()),
        })
        .collect();
    let chosen = undo::choose(&candidates, status, args.to_revision).map_err(anyhow::Error::msg)?;
    let Some(manifest) = &chosen.manifest else {
        bail!("revision {} of rollout {name} cannot be read (its data is not a revision)", chosen.number);
    };
    let t = &rollout.spec.template;
    let api = dynamic_api(&client, ns, &t.api_version, &t.kind).await?;
    // A replace carries the template's resourceVersion: it fails rather
    // than overwrite a change made since it was read; then it is read
    // again (the hub writes the template's status often).
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(template) = api.get_opt(&t.name).await? else {
            bail!("{} {ns}/{} is gone: nothing to undo", t.kind, t.name);
        };
        let current = serde_json::to_value(&template)?;
        let Some(undone) = undo::undone(&current, manifest).map_err(anyhow::Error::msg)? else {
            println!(
                "{} {} already has the content of revision {}: nothing to change",
                t.kind, t.name, chosen.number
            );
            return Ok(true);
        };
        let object: DynamicObject = serde_json::from_value(undone)?;
        match api.replace(&t.name, &PostParams::default(), &object).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < CONTROL_ATTEMPTS => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "writing revision {} back into {} {ns}/{}",
                    chosen.number, t.kind, t.name
                )))
            }
        }
    }

    let content_of =
        |hash: &str| contents.iter().find(|(_, h, _)| h == hash).and_then(|(_, _, c)| c.as_ref());
    let mut said = format!(
        "{} {} set back to revision {} ({}); the hub rolls it out in waves as a new change",
        t.kind, t.name, chosen.number, chosen.hash
    );
    if let (Some(from), Some(to)) = (content_of(&status.revision), content_of(&chosen.hash)) {
        let what: Vec<String> = changes(Some(from), to)
            .into_iter()
            .filter(|c| !c.contains("OverridePolicy"))
            .map(|c| format!("  {c}"))
            .collect();
        if !what.is_empty() {
            said.push_str(&format!(":\n{}", what.join("\n")));
        }
        if from.overrides != to.overrides {
            said.push_str(&format!(
                "\nnote: revision {} was made with other override policies ({}); overrides are separate objects \
                 and are not undone",
                chosen.number,
                if to.overrides.is_empty() {
                    "none".to_string()
                } else {
                    to.overrides.iter().map(|o| o.name.clone()).collect::<Vec<_>>().join(", ")
                }
            ));
        }
    }
    println!("{said}");
    println!("Follow it with `{}`", command_for(target, &name)("status"));
    Ok(true)
}
