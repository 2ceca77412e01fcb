//! `flotilla etcd list` and `flotilla etcd status`: the EtcdClusters as
//! kubectl shows objects, as a table (`-o wide` for more columns) or the
//! objects themselves (`-o json|yaml`), selected by label (`-l`).
//!
//! The rows and the status text are pure functions of the objects and
//! `now`; the two commands only list and print.

use anyhow::bail;
use clap::Args;
use flotilla_api::kok::{EtcdCluster, EtcdClusterStatus, EtcdMemberStatus};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};

use crate::hub_kubeconfig::HubKubeconfig;
use crate::output::{
    age, list_document, list_failure, printable, render_document, table, ListArgs, NamespaceScope,
};

#[derive(Args, Debug)]
pub struct EtcdListArgs {
    #[command(flatten)]
    pub scope: NamespaceScope,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

#[derive(Args, Debug)]
pub struct EtcdStatusArgs {
    /// The EtcdCluster (e.g. NAME-etcd of `flotilla cluster create NAME`); without it, every
    /// EtcdCluster of the namespace that -l selects.
    pub name: Option<String>,
    /// Namespace of the EtcdCluster on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

pub fn list_header(all_namespaces: bool, wide: bool) -> Vec<&'static str> {
    let mut header = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "READY", "LEADER", "VERSION", "PHASE", "AGE"]);
    if wide {
        header.extend(["RUNTIME", "DB SIZE", "UPGRADE", "LAST BACKUP"]);
    }
    header
}

fn or_none(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into())
}

/// `512 B`, `20.0 MiB`, `1.5 GiB`: as a person reads a database size.
pub fn size_text(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The upgrade under way or the last one: `3.6.0->3.7.4 Rolling (1 moved)`.
fn upgrade_text(status: &EtcdClusterStatus) -> Option<String> {
    let u = status.upgrade.as_ref()?;
    let state = u.state.map(|s| format!(" {s:?}")).unwrap_or_default();
    let moved = if u.moved.is_empty() { String::new() } else { format!(" ({} moved)", u.moved.len()) };
    Some(format!("{}->{}{state}{moved}", u.from, u.to))
}

pub fn list_row(etcd: &EtcdCluster, all_namespaces: bool, wide: bool, now: Timestamp) -> Vec<String> {
    let status = etcd.status.clone().unwrap_or_default();
    let mut row = Vec::new();
    if all_namespaces {
        row.push(etcd.namespace().unwrap_or_default());
    }
    row.extend([
        etcd.name_any(),
        format!("{}/{}", status.ready_members, etcd.spec.members),
        or_none(status.leader.clone()),
        status.version.clone().unwrap_or_else(|| etcd.spec.version.clone()),
        status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
        age(etcd.metadata.creation_timestamp.as_ref(), now),
    ]);
    if wide {
        row.push(format!("{:?}", etcd.spec.runtime));
        row.push(status.members.iter().filter_map(|m| m.db_size_bytes).max().map_or("-".into(), size_text));
        row.push(or_none(upgrade_text(&status)));
        row.push(or_none(status.last_scheduled_backup.clone()));
    }
    row
}

pub fn render_list(clusters: &[EtcdCluster], all_namespaces: bool, wide: bool, now: Timestamp) -> String {
    let mut t = table(list_header(all_namespaces, wide));
    for etcd in clusters {
        t.add_row(list_row(etcd, all_namespaces, wide, now));
    }
    t.to_string()
}

pub fn member_header(wide: bool) -> Vec<&'static str> {
    let mut header = vec!["MEMBER", "ROLE", "MACHINE", "HEALTHY", "VERSION", "DB SIZE"];
    if wide {
        header.extend(["ID", "CLIENT URL", "PEER URL"]);
    }
    header
}

/// leader, follower or learner.
fn role(member: &EtcdMemberStatus, leader: Option<&str>) -> &'static str {
    if member.is_learner {
        "learner"
    } else if leader == Some(member.name.as_str()) {
        "leader"
    } else {
        "follower"
    }
}

pub fn member_row(member: &EtcdMemberStatus, leader: Option<&str>, wide: bool) -> Vec<String> {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut row = vec![
        member.name.clone(),
        role(member, leader).into(),
        dash(&member.machine),
        if member.healthy { "yes" } else { "no" }.into(),
        dash(&member.version),
        member.db_size_bytes.map_or("-".into(), size_text),
    ];
    if wide {
        row.extend([dash(&member.id), dash(&member.client_url), dash(&member.peer_url)]);
    }
    row
}

/// What `etcd status NAME` prints: the summary, the upgrade and backups,
/// the conditions, then one row per member.
pub fn render_status(etcd: &EtcdCluster, wide: bool, now: Timestamp) -> String {
    let status = etcd.status.clone().unwrap_or_default();
    let mut out = format!(
        "EtcdCluster {}/{}: {} of {} members ready, leader {}, version {}, phase {} (age {})\n",
        etcd.namespace().unwrap_or_default(),
        etcd.name_any(),
        status.ready_members,
        etcd.spec.members,
        or_none(status.leader.clone()),
        status.version.clone().unwrap_or_else(|| etcd.spec.version.clone()),
        status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
        age(etcd.metadata.creation_timestamp.as_ref(), now),
    );
    if let Some(upgrade) = upgrade_text(&status) {
        let failed = status
            .upgrade
            .as_ref()
            .and_then(|u| u.failed_member.as_ref())
            .map(|m| format!(", member {m} did not become healthy"))
            .unwrap_or_default();
        out.push_str(&format!("Upgrade: {upgrade}{failed}\n"));
    }
    if let Some(schedule) = &etcd.spec.backup {
        out.push_str(&format!(
            "Backups: {:?} to {}:{}, keep {}; last {}, next {}\n",
            schedule.schedule,
            schedule.destination.machine,
            schedule.destination.path,
            schedule.retention,
            or_none(status.last_scheduled_backup.clone()),
            or_none(status.next_scheduled_backup.as_ref().map(|t| t.0.to_string())),
        ));
    }
    if !status.conditions.is_empty() {
        let mut t = table(vec!["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"]);
        for c in &status.conditions {
            t.add_row(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(Some(&c.last_transition_time), now),
                c.message.clone(),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if status.members.is_empty() {
        out.push_str("No members yet.\n");
    } else {
        let mut t = table(member_header(wide));
        for m in &status.members {
            t.add_row(member_row(m, status.leader.as_deref(), wide));
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

async fn listed(api: &Api<EtcdCluster>, list: &ListArgs) -> anyhow::Result<Vec<EtcdCluster>> {
    let mut items = api
        .list(&list.list_params())
        .await
        .map_err(|e| anyhow::anyhow!(list_failure("EtcdClusters", list, e)))?
        .items;
    items.sort_by_key(|e| (e.namespace(), e.name_any()));
    Ok(items)
}

pub async fn list(args: EtcdListArgs) -> anyhow::Result<bool> {
    let client = args.hub.client().await?;
    let context = client.default_namespace().to_string();
    let api: Api<EtcdCluster> = args.scope.api(client);
    let items = listed(&api, &args.list).await?;
    if let Some(text) = render_document(&list_document(&items)?, args.list.output)? {
        println!("{}", text.trim_end());
    } else if items.is_empty() {
        println!("No EtcdClusters{} in {}.", args.list.matching(), args.scope.place(&context));
    } else {
        println!("{}", render_list(&items, args.scope.all_namespaces, args.list.wide(), Timestamp::now()));
    }
    Ok(true)
}

pub async fn status(args: EtcdStatusArgs) -> anyhow::Result<bool> {
    let api: Api<EtcdCluster> = Api::namespaced(args.hub.client().await?, &args.namespace);
    let now = Timestamp::now();
    let items = match (&args.name, &args.list.selector) {
        (Some(_), Some(_)) => {
            bail!("a name and a label selector (-l) cannot both be given: drop the name to select by label")
        }
        (None, None) => bail!("name an EtcdCluster, or select some with -l; `flotilla etcd list` lists them"),
        (Some(name), None) => match api.get_opt(name).await? {
            Some(etcd) => {
                // One object asked for as json|yaml: the object itself, as kubectl.
                if let Some(text) = render_document(&printable(&etcd)?, args.list.output)? {
                    println!("{}", text.trim_end());
                    return Ok(true);
                }
                vec![etcd]
            }
            None => bail!(
                "no EtcdCluster {name} in namespace {}; `flotilla etcd list -A` lists them",
                args.namespace
            ),
        },
        (None, Some(_)) => {
            let items = listed(&api, &args.list).await?;
            if let Some(text) = render_document(&list_document(&items)?, args.list.output)? {
                println!("{}", text.trim_end());
                return Ok(true);
            }
            items
        }
    };
    if items.is_empty() {
        println!("No EtcdClusters{} in namespace {}.", args.list.matching(), args.namespace);
    }
    let texts: Vec<String> = items.iter().map(|e| render_status(e, args.list.wide(), now)).collect();
    print!("{}", texts.join("\n"));
    Ok(true)
}

#[cfg(test)]
#[path = "etcd_get_tests.rs"]
mod tests;
