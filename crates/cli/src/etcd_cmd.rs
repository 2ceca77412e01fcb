//! `flotilla etcd …`: on-demand snapshots of an EtcdCluster.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flotilla_api::kok::{EtcdBackup, EtcdBackupSpec, EtcdBackupStatus, JobPhase, MachinePath};
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

    fn parse(args: &[&str]) -> BackupArgs {
        let cli = Cli::try_parse_from(std::iter::once("etcd").chain(args.iter().copied())).unwrap();
        let EtcdCommand::Backup(b) = cli.cmd;
        b
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
