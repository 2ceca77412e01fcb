//! `flotilla etcd …`: on-demand snapshots of an EtcdCluster.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flotilla_api::kok::{
    EtcdBackup, EtcdBackupSpec, EtcdBackupStatus, EtcdClusterSpec, EtcdRestore, EtcdRestoreSpec,
    EtcdRestoreStatus, JobPhase, MachinePath,
};
use kube::api::PostParams;
use kube::Api;

use crate::fleetctl::HubKubeconfig;

#[derive(Subcommand, Debug)]
pub enum EtcdCommand {
    /// Snapshot an EtcdCluster to a directory on a Machine and wait for the outcome.
    #[command(long_about = "Snapshot an EtcdCluster to a directory on a Machine.\n\n\
        Creates an EtcdBackup; the operator runs `etcdctl snapshot save` against the\n\
        cluster's leader on --machine (its node agent runs it) and records the file's path,\n\
        size and revision on the EtcdBackup's status. Waits (up to --timeout) and exits 1\n\
        when the backup Failed, with the reason.")]
    Backup(BackupArgs),
    /// Restore an EtcdBackup into a new EtcdCluster and wait until it runs.
    #[command(long_about = "Restore an EtcdBackup into a new EtcdCluster.\n\n\
        Creates an EtcdRestore; the operator creates EtcdCluster --target (it must not exist:\n\
        a restore never overwrites a cluster) whose first member restores the snapshot on\n\
        the Machine holding it, the others joining as learners. The new cluster copies the\n\
        backed-up cluster's spec unless --members is given (required when that cluster is\n\
        gone). Point a HostedCluster's spec.etcd.clusterRef at it to bring its objects back.")]
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The EtcdBackup to restore (it must have Succeeded).
    pub backup: String,
    /// Name of the new EtcdCluster.
    #[arg(long)]
    pub target: String,
    /// Members of the new cluster (1, 3 or 5); default: the backed-up cluster's spec.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["1", "3", "5"]))]
    pub members: Option<String>,
    /// etcd version of the new cluster (with --members).
    #[arg(long, default_value = "3.4.23")]
    pub version: String,
    /// Namespace of the EtcdBackup on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// Return once the EtcdRestore is created.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the outcome.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

/// The EtcdRestore the flags ask for.
pub fn restore_object(args: &RestoreArgs) -> EtcdRestore {
    let template = args.members.as_deref().and_then(|m| m.parse().ok()).map(|members| EtcdClusterSpec {
        members,
        version: args.version.clone(),
        ..Default::default()
    });
    let mut restore = EtcdRestore::new(
        &format!("{}-restore", args.target),
        EtcdRestoreSpec {
            backup: Some(args.backup.clone()),
            snapshot: None,
            target: args.target.clone(),
            template,
        },
    );
    restore.metadata.namespace = Some(args.namespace.clone());
    restore
}

/// One line about a restore's outcome, or `None` while it runs.
pub fn restore_outcome(name: &str, target: &str, status: &EtcdRestoreStatus) -> Option<(bool, String)> {
    let message = status.message.as_deref().unwrap_or_default();
    match status.phase {
        Some(JobPhase::Succeeded) => Some((
            true,
            format!(
                "restore {name}: EtcdCluster {target} runs the snapshot (revision {})",
                status.revision.map_or("?".to_string(), |r| r.to_string())
            ),
        )),
        Some(JobPhase::Failed) => Some((false, format!("restore {name} failed: {message}"))),
        _ => None,
    }
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The EtcdCluster to snapshot (e.g. NAME-etcd of `flotilla cluster create NAME`).
    pub cluster: String,
    /// The Machine the snapshot is written on.
    #[arg(long)]
    pub machine: String,
    /// Absolute directory on that Machine.
    #[arg(long, value_name = "DIR")]
    pub dir: String,
    /// Name of the EtcdBackup (default: CLUSTER-<unix-seconds>).
    #[arg(long)]
    pub name: Option<String>,
    /// Namespace of the EtcdCluster on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// Return once the EtcdBackup is created.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the outcome.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

/// The EtcdBackup the flags ask for; `Err` says what to fix.
pub fn backup_object(args: &BackupArgs, now_secs: u64) -> Result<EtcdBackup, String> {
    if !args.dir.starts_with('/') {
        return Err(format!("--dir {}: must be an absolute directory on the machine", args.dir));
    }
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{now_secs}", args.cluster));
    let mut backup = EtcdBackup::new(
        &name,
        EtcdBackupSpec {
            cluster: args.cluster.clone(),
            prefix: None,
            destination: MachinePath { machine: args.machine.clone(), path: args.dir.clone() },
        },
    );
    backup.metadata.namespace = Some(args.namespace.clone());
    Ok(backup)
}

/// One line about a backup's outcome, or `None` while it runs.
pub fn outcome(name: &str, status: &EtcdBackupStatus) -> Option<(bool, String)> {
    match status.phase {
        Some(JobPhase::Succeeded) => Some((
            true,
            format!(
                "backup {name}: {} ({} bytes, revision {}, from {})",
                status.path.as_deref().unwrap_or("?"),
                status.size_bytes.map_or("?".to_string(), |s| s.to_string()),
                status.revision.map_or("?".to_string(), |r| r.to_string()),
                status.member.as_deref().unwrap_or("?"),
            ),
        )),
        Some(JobPhase::Failed) => Some((
            false,
            format!("backup {name} failed: {}", status.message.as_deref().unwrap_or("no reason given")),
        )),
        _ => None,
    }
}

pub async fn run(cmd: EtcdCommand) -> anyhow::Result<bool> {
    match cmd {
        EtcdCommand::Backup(args) => backup(args).await,
        EtcdCommand::Restore(args) => restore(args).await,
    }
}

async fn restore(args: RestoreArgs) -> anyhow::Result<bool> {
    let object = restore_object(&args);
    let name = object.metadata.name.clone().unwrap_or_default();
    let client = args.hub.client().await?;
    let api: Api<EtcdRestore> = Api::namespaced(client, &args.namespace);
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating EtcdRestore {name} in namespace {}", args.namespace))?;
    eprintln!("EtcdRestore {name} created");
    if args.no_wait {
        return Ok(true);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last = String::new();
    loop {
        let status = api
            .get(&name)
            .await
            .with_context(|| format!("reading EtcdRestore {name}"))?
            .status
            .unwrap_or_default();
        if let Some((ok, line)) = restore_outcome(&name, &args.target, &status) {
            println!("{line}");
            return Ok(ok);
        }
        let now = status.message.clone().unwrap_or_default();
        if now != last && !now.is_empty() {
            eprintln!("{now}");
            last = now;
        }
        if Instant::now() > deadline {
            eprintln!(
                "restore {name} did not finish within {}s (is `flotilla hub run` running?)",
                args.timeout
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn backup(args: BackupArgs) -> anyhow::Result<bool> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let object = backup_object(&args, now).map_err(anyhow::Error::msg)?;
    let name = object.metadata.name.clone().unwrap_or_default();
    let client = args.hub.client().await?;
    let api: Api<EtcdBackup> = Api::namespaced(client, &args.namespace);
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating EtcdBackup {name} in namespace {}", args.namespace))?;
    eprintln!("EtcdBackup {name} created");
    if args.no_wait {
        return Ok(true);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let current = api.get(&name).await.with_context(|| format!("reading EtcdBackup {name}"))?;
        if let Some((ok, line)) = outcome(&name, &current.status.unwrap_or_default()) {
            println!("{line}");
            return Ok(ok);
        }
        if Instant::now() > deadline {
            eprintln!(
                "backup {name} did not finish within {}s (is `flotilla hub run` running?)",
                args.timeout
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: EtcdCommand,
    }

    fn command(args: &[&str]) -> EtcdCommand {
        Cli::try_parse_from(std::iter::once("etcd").chain(args.iter().copied())).unwrap().cmd
    }

    fn parse(args: &[&str]) -> BackupArgs {
        match command(args) {
            EtcdCommand::Backup(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn restore_flags_name_the_backup_and_the_new_cluster() {
        let EtcdCommand::Restore(args) = command(&["restore", "b1", "--target", "e2"]) else { panic!() };
        let r = restore_object(&args);
        assert_eq!(r.metadata.name.as_deref(), Some("e2-restore"));
        assert_eq!((r.spec.backup.as_deref(), r.spec.target.as_str()), (Some("b1"), "e2"));
        assert!(r.spec.template.is_none(), "copies the backed-up cluster's spec");
        let EtcdCommand::Restore(args) = command(&["restore", "b1", "--target", "e2", "--members", "3"])
        else {
            panic!()
        };
        assert_eq!(restore_object(&args).spec.template.unwrap().members, 3);
        assert!(Cli::try_parse_from(["etcd", "restore", "b1", "--target", "e2", "--members", "2"]).is_err());
        let failed = EtcdRestoreStatus {
            phase: Some(JobPhase::Failed),
            message: Some("exists".into()),
            ..Default::default()
        };
        assert_eq!(restore_outcome("r", "e2", &failed), Some((false, "restore r failed: exists".into())));
    }

    #[test]
    fn flags_become_an_etcd_backup_and_relative_dirs_are_refused() {
        let args = parse(&["backup", "c1-etcd", "--machine", "m1", "--dir", "/var/backups", "-n", "team"]);
        let b = backup_object(&args, 1700).unwrap();
        assert_eq!(b.metadata.name.as_deref(), Some("c1-etcd-1700"));
        assert_eq!(b.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(b.spec.destination, MachinePath { machine: "m1".into(), path: "/var/backups".into() });
        let relative = parse(&["backup", "c1-etcd", "--machine", "m1", "--dir", "backups"]);
        assert!(backup_object(&relative, 1).unwrap_err().contains("absolute"));
    }

    #[test]
    fn outcomes_say_where_the_snapshot_is_or_why_not() {
        let done = EtcdBackupStatus {
            phase: Some(JobPhase::Succeeded),
            path: Some("/b/s.db".into()),
            size_bytes: Some(20480),
            revision: Some(7),
            member: Some("c1-etcd-0".into()),
            ..Default::default()
        };
        assert_eq!(
            outcome("b", &done),
            Some((true, "backup b: /b/s.db (20480 bytes, revision 7, from c1-etcd-0)".into()))
        );
        let failed = EtcdBackupStatus {
            phase: Some(JobPhase::Failed),
            message: Some("no leader".into()),
            ..Default::default()
        };
        assert_eq!(outcome("b", &failed), Some((false, "backup b failed: no leader".into())));
        assert_eq!(
            outcome("b", &EtcdBackupStatus { phase: Some(JobPhase::Running), ..Default::default() }),
            None
        );
    }
}
