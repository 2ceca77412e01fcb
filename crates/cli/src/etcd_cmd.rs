//! `flotilla etcd …`: list EtcdClusters and show one (`etcd_get`),
//! on-demand snapshots of an EtcdCluster (or of one tenant's key prefix)
//! and their restores; and the hidden `flotilla etcd-keys dump|load` that
//! prefixed backups and restores run on the machines.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flotilla_api::kok::{
    EtcdBackup, EtcdBackupSpec, EtcdBackupStatus, EtcdClusterSpec, EtcdRestore, EtcdRestoreSpec,
    EtcdRestoreStatus, JobPhase, MachinePath,
};
use kube::api::PostParams;
use kube::Api;

use crate::hub_kubeconfig::HubKubeconfig;

#[derive(Subcommand, Debug)]
pub enum EtcdCommand {
    /// List the EtcdClusters: members ready, leader, version, phase.
    ///
    /// -o wide adds the runtime, the largest member database, the upgrade
    /// under way (or the last one) and the newest scheduled backup; -o
    /// json|yaml prints the objects; -l selects by label (e.g. -l
    /// kok.flotilla.io/hosted-cluster=default.c1).
    ///
    /// Example: flotilla etcd list -A -o wide
    List(crate::etcd_get::EtcdListArgs),
    /// Show an EtcdCluster: its upgrade, backups, conditions and each member
    /// (role, machine, health, version, database size).
    ///
    /// -o wide adds each member's ID and URLs; -o json|yaml prints the
    /// object. Without NAME, -l selects the clusters to show.
    ///
    /// Example: flotilla etcd status c1-etcd -o wide
    Status(crate::etcd_get::EtcdStatusArgs),
    /// Snapshot an EtcdCluster (or one tenant's --prefix) to a directory on a Machine and wait for the outcome.
    #[command(long_about = "Snapshot an EtcdCluster to a directory on a Machine.\n\n\
        Creates an EtcdBackup; the operator runs `etcdctl snapshot save` against the\n\
        cluster's leader on --machine (its node agent runs it) and records the file's path,\n\
        size and revision on the EtcdBackup's status. Waits (up to --timeout) and exits 1\n\
        when the backup Failed, with the reason.\n\n\
        With --prefix, only the keys under that prefix are backed up: one tenant of a shared\n\
        EtcdCluster (a HostedCluster's spec.etcd.shared.prefix, its --etcd-prefix). The file is\n\
        then a key dump (DIR/CLUSTER-NAME.keys.json, read at one revision) written by\n\
        `flotilla etcd-keys dump` on the machine; the status also gives the key count. The\n\
        prefix is a plain byte prefix: /clusters/a also covers /clusters/ab/...; end it with /\n\
        to mean one directory only.")]
    Backup(BackupArgs),
    /// Restore an EtcdBackup: a snapshot into a new EtcdCluster, a prefixed one into an existing one.
    #[command(long_about = "Restore an EtcdBackup and wait for the outcome.\n\n\
        Snapshot (whole-cluster) backups: creates an EtcdRestore; the operator creates\n\
        EtcdCluster --target (it must not exist: a restore never overwrites a cluster) whose\n\
        first member restores the snapshot on the Machine holding it, the others joining as\n\
        learners. The new cluster copies the backed-up cluster's spec unless --members is\n\
        given (required when that cluster is gone). Point a HostedCluster's\n\
        spec.etcd.clusterRef at it to bring its objects back.\n\n\
        Prefixed backups (one tenant's keys, `etcd backup --prefix`): --target is an EXISTING\n\
        EtcdCluster, typically the shared one the backup was taken from, and the backup's\n\
        prefix must be empty there (delete the tenant's keys first, with its API server\n\
        stopped). `flotilla etcd-keys load` on the Machine holding the dump writes the keys\n\
        back; other tenants are not touched. The restore is refused when the prefix holds\n\
        keys that differ from the backup, so a live tenant is never overwritten; keys that\n\
        already hold the backup's values (what an interrupted restore leaves) are kept, so\n\
        running the restore again finishes it. --members does not apply.")]
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The EtcdBackup to restore (it must have Succeeded).
    pub backup: String,
    /// Name of the new EtcdCluster (for a prefixed backup: the existing one to restore into).
    #[arg(long)]
    pub target: String,
    /// Name of the EtcdRestore (default: TARGET-restore; BACKUP-restore-<unix-seconds> for a
    /// prefixed backup, which may be restored into one cluster more than once).
    #[arg(long)]
    pub name: Option<String>,
    /// Members of the new cluster (1, 3 or 5); default: the backed-up cluster's spec.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["1", "3", "5"]))]
    pub members: Option<String>,
    /// etcd version of the new cluster (with --members).
    #[arg(long, default_value = "3.7.4")]
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

/// The EtcdRestore the flags ask for, of a backup that is `prefixed` or
/// not; `Err` says what to fix.
pub fn restore_object(args: &RestoreArgs, prefixed: bool, now_secs: u64) -> Result<EtcdRestore, String> {
    if prefixed && args.members.is_some() {
        return Err(format!(
            "EtcdBackup {} holds one prefix's keys: it restores into the existing EtcdCluster --target, \
             so --members does not apply",
            args.backup
        ));
    }
    let template = args.members.as_deref().and_then(|m| m.parse().ok()).map(|members| EtcdClusterSpec {
        members,
        version: args.version.clone(),
        ..Default::default()
    });
    let name = match (&args.name, prefixed) {
        (Some(name), _) => name.clone(),
        (None, true) => format!("{}-restore-{now_secs}", args.backup),
        (None, false) => format!("{}-restore", args.target),
    };
    let mut restore = EtcdRestore::new(
        &name,
        EtcdRestoreSpec {
            backup: Some(args.backup.clone()),
            snapshot: None,
            target: args.target.clone(),
            template,
        },
    );
    restore.metadata.namespace = Some(args.namespace.clone());
    Ok(restore)
}

/// One line about a restore's outcome, or `None` while it runs.
pub fn restore_outcome(
    name: &str,
    target: &str,
    prefixed: bool,
    status: &EtcdRestoreStatus,
) -> Option<(bool, String)> {
    let message = status.message.as_deref().unwrap_or_default();
    match status.phase {
        Some(JobPhase::Succeeded) if prefixed => Some((true, format!("restore {name}: {message}"))),
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
    /// Back up only the keys under this prefix (one tenant of a shared EtcdCluster, e.g.
    /// /clusters/team-a): a key dump, not a snapshot.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
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
    if let Some(prefix) = args.prefix.as_deref().filter(|p| !p.starts_with('/')) {
        return Err(format!("--prefix {prefix}: must start with /, e.g. /clusters/team-a"));
    }
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{now_secs}", args.cluster));
    let mut backup = EtcdBackup::new(
        &name,
        EtcdBackupSpec {
            cluster: args.cluster.clone(),
            prefix: args.prefix.clone(),
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
                "backup {name}: {} ({} bytes, revision {}, from {}){}",
                status.path.as_deref().unwrap_or("?"),
                status.size_bytes.map_or("?".to_string(), |s| s.to_string()),
                status.revision.map_or("?".to_string(), |r| r.to_string()),
                status.member.as_deref().unwrap_or("?"),
                status.message.as_deref().map_or(String::new(), |m| format!(": {m}")),
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
        EtcdCommand::List(args) => crate::etcd_get::list(args).await,
        EtcdCommand::Status(args) => crate::etcd_get::status(args).await,
        EtcdCommand::Backup(args) => backup(args).await,
        EtcdCommand::Restore(args) => restore(args).await,
    }
}

async fn restore(args: RestoreArgs) -> anyhow::Result<bool> {
    let client = args.hub.client().await?;
    let backup = Api::<EtcdBackup>::namespaced(client.clone(), &args.namespace)
        .get_opt(&args.backup)
        .await
        .with_context(|| format!("reading EtcdBackup {}", args.backup))?
        .with_context(|| {
            format!("EtcdBackup {} does not exist in namespace {}", args.backup, args.namespace)
        })?;
    let prefixed = backup.spec.prefix.is_some();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let object = restore_object(&args, prefixed, now).map_err(anyhow::Error::msg)?;
    let name = object.metadata.name.clone().unwrap_or_default();
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
        if let Some((ok, line)) = restore_outcome(&name, &args.target, prefixed, &status) {
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

#[derive(Subcommand, Debug)]
pub enum EtcdKeysCommand {
    /// Write every key under --prefix (read at one revision) to --out, atomically.
    Dump(KeysDumpArgs),
    /// Write the keys of a dump back; refuses when keys under its prefix differ from it.
    Load(KeysLoadArgs),
}

/// How to reach the cluster (as etcdctl's flags).
#[derive(Args, Debug)]
pub struct KeysConnArgs {
    /// Client URLs, tried in order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// PEM file of the CA the members' serving certificates are signed by.
    #[arg(long)]
    pub cacert: PathBuf,
    /// PEM file of the client certificate.
    #[arg(long)]
    pub cert: PathBuf,
    /// PEM file of the client certificate's key.
    #[arg(long)]
    pub key: PathBuf,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 30)]
    pub request_timeout: u64,
}

impl KeysConnArgs {
    fn connection(&self) -> anyhow::Result<flotilla_kok::etcd_keys::Connection> {
        Ok(flotilla_kok::etcd_keys::Connection::from_files(
            self.endpoints.clone(),
            &self.cacert,
            &self.cert,
            &self.key,
            Duration::from_secs(self.request_timeout),
        )?)
    }
}

#[derive(Args, Debug)]
pub struct KeysDumpArgs {
    #[command(flatten)]
    pub conn: KeysConnArgs,
    /// Keys starting with these bytes, e.g. /clusters/team-a.
    #[arg(long)]
    pub prefix: String,
    /// The dump file (written to a temporary file beside it, then renamed).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct KeysLoadArgs {
    #[command(flatten)]
    pub conn: KeysConnArgs,
    /// The dump file.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Refuse unless the dump is of this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// Runs `flotilla etcd-keys …`; the summary is the last line of stdout
/// (the operators read it back from the component's log).
pub async fn etcd_keys(cmd: EtcdKeysCommand) -> anyhow::Result<bool> {
    let line = match cmd {
        EtcdKeysCommand::Dump(args) => {
            let summary =
                flotilla_kok::etcd_keys::dump(&args.conn.connection()?, &args.prefix, &args.out).await?;
            eprintln!(
                "{} keys under {} at revision {} written to {}",
                summary.keys, summary.prefix, summary.revision, summary.dumped
            );
            serde_json::to_string(&summary)?
        }
        EtcdKeysCommand::Load(args) => {
            let summary =
                flotilla_kok::etcd_keys::load(&args.conn.connection()?, &args.input, args.prefix.as_deref())
                    .await?;
            eprintln!(
                "{} keys under {} written ({} already held the backup's values)",
                summary.written, summary.prefix, summary.present
            );
            serde_json::to_string(&summary)?
        }
    };
    println!("{line}");
    Ok(true)
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
        let r = restore_object(&args, false, 5).unwrap();
        assert_eq!(r.metadata.name.as_deref(), Some("e2-restore"));
        assert_eq!((r.spec.backup.as_deref(), r.spec.target.as_str()), (Some("b1"), "e2"));
        assert!(r.spec.template.is_none(), "copies the backed-up cluster's spec");
        let EtcdCommand::Restore(args) = command(&["restore", "b1", "--target", "e2", "--members", "3"])
        else {
            panic!()
        };
        assert_eq!(restore_object(&args, false, 5).unwrap().spec.template.unwrap().members, 3);
        let message = restore_object(&args, true, 5).unwrap_err();
        assert!(message.contains("--members does not apply"), "{message}");
        assert!(Cli::try_parse_from(["etcd", "restore", "b1", "--target", "e2", "--members", "2"]).is_err());
        let failed = EtcdRestoreStatus {
            phase: Some(JobPhase::Failed),
            message: Some("exists".into()),
            ..Default::default()
        };
        assert_eq!(
            restore_outcome("r", "e2", false, &failed),
            Some((false, "restore r failed: exists".into()))
        );
    }

    #[test]
    fn a_prefixed_backup_restores_into_its_target_under_a_fresh_name() {
        let EtcdCommand::Restore(args) = command(&["restore", "b1", "--target", "shared"]) else { panic!() };
        let r = restore_object(&args, true, 1700).unwrap();
        assert_eq!(r.metadata.name.as_deref(), Some("b1-restore-1700"), "one per run");
        assert_eq!((r.spec.backup.as_deref(), r.spec.target.as_str()), (Some("b1"), "shared"));
        assert!(r.spec.template.is_none());
        let EtcdCommand::Restore(args) = command(&["restore", "b1", "--target", "shared", "--name", "again"])
        else {
            panic!()
        };
        assert_eq!(restore_object(&args, true, 1).unwrap().metadata.name.as_deref(), Some("again"));
        let done = EtcdRestoreStatus {
            phase: Some(JobPhase::Succeeded),
            message: Some("3 key(s) written".into()),
            ..Default::default()
        };
        assert_eq!(
            restore_outcome("r", "shared", true, &done),
            Some((true, "restore r: 3 key(s) written".into()))
        );

        let args = parse(&["backup", "shared", "--machine", "m1", "--dir", "/b", "--prefix", "/clusters/a"]);
        assert_eq!(backup_object(&args, 1).unwrap().spec.prefix.as_deref(), Some("/clusters/a"));
        let args = parse(&["backup", "shared", "--machine", "m1", "--dir", "/b", "--prefix", "clusters/a"]);
        assert!(backup_object(&args, 1).unwrap_err().contains("must start with /"));
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
        let keys = EtcdBackupStatus { message: Some("3 keys under /a at revision 7".into()), ..done };
        assert_eq!(
            outcome("b", &keys),
            Some((
                true,
                "backup b: /b/s.db (20480 bytes, revision 7, from c1-etcd-0): 3 keys under /a at revision 7"
                    .into()
            ))
        );
        assert_eq!(
            outcome("b", &EtcdBackupStatus { phase: Some(JobPhase::Running), ..Default::default() }),
            None
        );
    }
}
