//! `flotilla cluster get | kubeconfig | upgrade | delete | rotate-certs`:
//! read or change an existing HostedCluster, then (unless `--no-wait`) wait
//! for the operator's verdict.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use flotilla_api::kok::{EtcdCluster, HostedCluster, ROTATE_CERTS_ANNOTATION};
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{owner_label_value, OWNER_LABEL};
use flotilla_kok_core::wait::{
    deletion_verdict, leftover_components, not_ready_summary, phase_of, rotation_verdict, upgrade_verdict,
    waiting_for,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::output::{list_document, list_failure, printable, render_document};

use super::args::{DeleteArgs, GetArgs, KubeconfigArgs, RotateCertsArgs, UpgradeArgs};
use super::progress::wait_for;
use super::render::{namespace_flag, render_detail, render_list};

async fn existing(api: &Api<HostedCluster>, name: &str, namespace: &str) -> anyhow::Result<HostedCluster> {
    api.get_opt(name).await.context("reading HostedClusters (is `flotilla hub install` done?)")?.with_context(
        || format!("no hosted cluster {name} in namespace {namespace}; `flotilla cluster get` lists them"),
    )
}

/// The annotation value that asks for a rotation at `unix_seconds`.
pub fn rotation_value(ca: bool, unix_seconds: i64) -> String {
    format!("{}/{unix_seconds}", if ca { "ca" } else { "leaves" })
}

pub async fn get(args: GetArgs) -> anyhow::Result<bool> {
    if args.name.is_some() && args.list.selector.is_some() {
        bail!("a name and a label selector (-l) cannot both be given: drop the name to list by label");
    }
    let client = args.target.client().await?;
    let namespace = &args.target.namespace;
    let now = Timestamp::now();
    let Some(name) = args.name else {
        let api: Api<HostedCluster> =
            if args.all_namespaces { Api::all(client) } else { Api::namespaced(client, namespace) };
        let mut list = api
            .list(&args.list.list_params())
            .await
            .map_err(|e| anyhow::anyhow!(list_failure("HostedClusters", &args.list, e)))?
            .items;
        list.sort_by_key(|hc| (hc.namespace(), hc.name_any()));
        let document = list_document(&list)?;
        if let Some(text) = render_document(&document, args.list.output)? {
            println!("{}", text.trim_end());
        } else if list.is_empty() {
            let place = if args.all_namespaces {
                "any namespace".to_string()
            } else {
                format!("namespace {namespace}")
            };
            println!(
                "No hosted clusters{} in {place}. Create one with `flotilla cluster create NAME`.",
                args.list.matching()
            );
        } else {
            println!("{}", render_list(&list, args.all_namespaces, args.list.wide(), now));
        }
        return Ok(true);
    };
    let api: Api<HostedCluster> = Api::namespaced(client.clone(), namespace);
    let hc = existing(&api, &name, namespace).await?;
    // One object asked for as json|yaml: the object itself, as kubectl.
    if let Some(text) = render_document(&printable(&hc)?, args.list.output)? {
        println!("{}", text.trim_end());
        return Ok(true);
    }
    let etcd = match hc.spec.etcd.resolve() {
        Some((etcd, _)) => Api::<EtcdCluster>::namespaced(client, namespace).get_opt(etcd).await?,
        None => None,
    };
    println!("{}", render_detail(&hc, etcd.as_ref(), now));
    Ok(true)
}

pub async fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<bool> {
    let client = args.target.client().await?;
    let namespace = &args.target.namespace;
    let hc = existing(&Api::namespaced(client.clone(), namespace), &args.name, namespace).await?;
    let not_yet = || {
        format!(
            "cluster {} is not provisioned yet (phase {}; {}): it has no admin kubeconfig; \
             `flotilla cluster get {}` shows its progress",
            args.name,
            phase_of(&hc),
            waiting_for(&hc),
            args.name
        )
    };
    let Some(secret_name) = hc.status.as_ref().and_then(|s| s.admin_kubeconfig_secret.clone()) else {
        bail!(not_yet());
    };
    let secret = Api::<Secret>::namespaced(client, namespace).get_opt(&secret_name).await?;
    let Some(bytes) =
        secret.and_then(|s| s.data).and_then(|d| d.get("kubeconfig").cloned()).filter(|b| !b.0.is_empty())
    else {
        bail!(not_yet());
    };
    std::io::stdout().write_all(&bytes.0)?;
    Ok(true)
}

pub async fn upgrade(args: UpgradeArgs) -> anyhow::Result<bool> {
    let client = args.target.client().await?;
    let namespace = &args.target.namespace;
    let api: Api<HostedCluster> = Api::namespaced(client, namespace);
    let hc = existing(&api, &args.name, namespace).await?;
    let target = args.version.trim_start_matches('v').to_string();
    let from = hc.status.as_ref().and_then(|s| s.version.clone()).unwrap_or_else(|| hc.spec.version.clone());
    let patched = api
        .patch(&args.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": target}})))
        .await
        .with_context(|| format!("setting spec.version of {} to {target}", args.name))?;
    let generation = patched.metadata.generation.unwrap_or_default();
    println!("Cluster {}: spec.version {} → {target}.", args.name, hc.spec.version);
    if args.wait.no_wait {
        println!(
            "Not waiting; `flotilla cluster get {}{}` shows the upgrade.",
            args.name,
            namespace_flag(namespace)
        );
        return Ok(true);
    }
    let name = args.name.clone();
    let (summary, elapsed) = wait_for(
        Duration::from_secs(args.wait.timeout),
        &format!("upgrading {name} from {from} to {target}"),
        || {
            let (api, name, target) = (api.clone(), name.clone(), target.clone());
            async move {
                let hc = api.get(&name).await?;
                Ok((upgrade_verdict(&hc, &target, generation), not_ready_summary(&hc)))
            }
        },
    )
    .await?;
    println!("Cluster {}: {summary} in {}s.", args.name, elapsed.as_secs());
    Ok(true)
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<bool> {
    let client = args.target.client().await?;
    let namespace = args.target.namespace.clone();
    let api: Api<HostedCluster> = Api::namespaced(client.clone(), &namespace);
    let hc = existing(&api, &args.name, &namespace).await?;
    // Only an EtcdCluster this cluster owns goes with it.
    let own_etcd = match hc.spec.etcd.cluster_ref.as_deref() {
        Some(etcd) => Api::<EtcdCluster>::namespaced(client.clone(), &namespace)
            .get_opt(etcd)
            .await?
            .filter(|e| e.labels().get(OWNER_LABEL) == Some(&owner_label_value(&namespace, &args.name)))
            .map(|e| e.name_any()),
        None => None,
    };
    match api.delete(&args.name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).context(format!("deleting HostedCluster {}", args.name)),
    }
    println!("Deleting hosted cluster {namespace}/{}.", args.name);
    if args.wait.no_wait {
        println!("Not waiting; the operator removes its processes, data and Secrets.");
        return Ok(true);
    }
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let machines: Api<Machine> = Api::all(client);
    let name = args.name.clone();
    let (_, elapsed) = wait_for(Duration::from_secs(args.wait.timeout), &format!("deleting {name}"), || {
        let (api, etcds, machines, name, namespace, own_etcd) =
            (api.clone(), etcds.clone(), machines.clone(), name.clone(), namespace.clone(), own_etcd.clone());
        async move {
            let hc = api.get_opt(&name).await?;
            let etcd_left = match &own_etcd {
                Some(e) => etcds.get_opt(e).await?.map(|e| e.name_any()),
                None => None,
            };
            let machines = machines.list(&ListParams::default()).await?.items;
            let verdict = deletion_verdict(hc.as_ref(), etcd_left.as_deref(), &machines, &namespace, &name);
            let left = leftover_components(&machines, &namespace, &name, etcd_left.as_deref());
            let detail: Vec<String> = left.iter().map(|c| format!("  still on a Machine: {c}")).collect();
            Ok((verdict, detail.join("\n")))
        }
    })
    .await?;
    println!(
        "Hosted cluster {} deleted in {}s: its processes, etcd data and Secrets are gone.",
        args.name,
        elapsed.as_secs()
    );
    Ok(true)
}

pub async fn rotate_certs(args: RotateCertsArgs) -> anyhow::Result<bool> {
    let client = args.target.client().await?;
    let namespace = &args.target.namespace;
    let api: Api<HostedCluster> = Api::namespaced(client.clone(), namespace);
    existing(&api, &args.name, namespace).await?;
    let requested_at = Timestamp::now().as_second();
    let value = rotation_value(args.ca, requested_at);
    api.patch(
        &args.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ROTATE_CERTS_ANNOTATION: value}}})),
    )
    .await
    .with_context(|| format!("annotating {}", args.name))?;
    println!("Cluster {}: rotation {value} requested.", args.name);
    if args.wait.no_wait {
        println!(
            "Not waiting; `flotilla cluster get {}{}` shows the certificates.",
            args.name,
            namespace_flag(namespace)
        );
        return Ok(true);
    }
    let machines: Api<Machine> = Api::all(client);
    let name = args.name.clone();
    let (summary, elapsed) = wait_for(
        Duration::from_secs(args.wait.timeout),
        &format!("rotating the certificates of {name}"),
        || {
            let (api, machines, name, value) = (api.clone(), machines.clone(), name.clone(), value.clone());
            async move {
                let hc = api.get(&name).await?;
                let machines = machines.list(&ListParams::default()).await?.items;
                Ok((rotation_verdict(&hc, &machines, &value, requested_at), not_ready_summary(&hc)))
            }
        },
    )
    .await?;
    println!("Cluster {}: {summary}; Ready again after {}s.", args.name, elapsed.as_secs());
    if args.ca {
        println!(
            "The CA changed: fetch the kubeconfig again (`flotilla cluster kubeconfig {}{}`).",
            args.name,
            namespace_flag(namespace)
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_request_names_what_to_reissue_and_when() {
        assert_eq!(rotation_value(false, 1_700_000_000), "leaves/1700000000");
        assert_eq!(rotation_value(true, 5), "ca/5");
    }
}
