//! The arguments of `flotilla cluster create | get | kubeconfig | upgrade |
//! delete | rotate-certs`.

use clap::{Args, Subcommand, ValueEnum};
use flotilla_api::kok::Runtime;

use crate::hub_kubeconfig::HubKubeconfig;

/// The Kubernetes version of the binary cache.
pub const DEFAULT_VERSION: &str = "1.37.2";

#[derive(Subcommand, Debug)]
pub enum HostedCommand {
    /// Create a hosted cluster (etcd, control plane, nodes) and wait until it is Ready.
    // Help text is broken into lines by hand: clap does not wrap without its
    // wrap_help feature, and every line must fit in 100 columns.
    #[command(long_about = "Create a hosted cluster and wait until it is Ready.\n\n\
        Creates an EtcdCluster NAME-etcd (owned by the cluster: deleted with it) and a\n\
        HostedCluster NAME in --namespace on the hub. The hub's operators (`flotilla hub run`)\n\
        run etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the worker\n\
        kubelets on the Machines of the node agents (`flotilla node-agent`), then install the\n\
        add-ons.\n\n\
        Waits (up to --timeout) showing which condition is not True yet, then prints how to\n\
        use the cluster. Exits 1 when the spec is refused (Valid=False) or on timeout, with\n\
        the conditions' messages, and early when a condition says it cannot be built as things\n\
        stand (e.g. NotEnoughMachines: more etcd members than Machines) and has said so for 30s;\n\
        the cluster is left as created. Refuses to touch a cluster that exists already.")]
    Create(CreateArgs),
    /// List the hosted clusters, or show one in detail (conditions, certificates...).
    #[command(
        long_about = "List the hosted clusters, or show one in detail (conditions, certificates...).\n\n\
        -o json|yaml prints the HostedClusters themselves (a List when listing); -o wide adds\n\
        the etcd, runtime and replicas columns; -l selects by label, as kubectl does.\n\n\
        Example: flotilla cluster get -A -l team=web -o wide"
    )]
    Get(GetArgs),
    /// Print a hosted cluster's admin kubeconfig.
    #[command(long_about = "Print a hosted cluster's admin kubeconfig on stdout.\n\n\
        It is read from the Secret the cluster's status names (key `kubeconfig`); a cluster\n\
        that is not provisioned yet has none.\n\n\
        Example:\n  flotilla cluster kubeconfig c1 > c1.kubeconfig\n  \
        kubectl --kubeconfig c1.kubeconfig get nodes")]
    Kubeconfig(KubeconfigArgs),
    /// Move a hosted cluster to another Kubernetes version and wait for the outcome.
    #[command(long_about = "Move a hosted cluster to another Kubernetes version.\n\n\
        Sets spec.version; the operator moves one instance at a time (kube-apiserver first)\n\
        and rolls back when a step does not become healthy in time. Waits (up to --timeout)\n\
        showing the step in progress. Exits 0 when the upgrade Succeeded; 1 when it was\n\
        RolledBack or Refused (e.g. a skipped minor version, or a version the operator has\n\
        no binaries for), with the reason.")]
    Upgrade(UpgradeArgs),
    /// Delete a hosted cluster and wait until its processes, data and Secrets are gone.
    #[command(long_about = "Delete a hosted cluster.\n\n\
        Deletes the HostedCluster; the operator then stops its processes on the Machines,\n\
        removes its fleet membership (ManagedCluster), its etcd data (the EtcdCluster it\n\
        owns, or its key prefix in a shared one) and its Secrets, and lets the object go.\n\
        Waits (up to --timeout) until the HostedCluster and its own EtcdCluster are gone.")]
    Delete(DeleteArgs),
    /// Reissue a hosted cluster's certificates and wait until it is Ready again.
    #[command(long_about = "Reissue a hosted cluster's certificates now.\n\n\
        Sets the annotation kok.flotilla.io/rotate-certs to leaves/<unix-seconds> (or\n\
        ca/<unix-seconds> with --ca). The operator reissues every leaf certificate (with --ca\n\
        first the CAs, so kubeconfigs fetched before stop working) and the node agents\n\
        restart the control plane with them. Waits (up to --timeout) until the operator has\n\
        handled this request, every control-plane process has restarted since, and the\n\
        cluster is Ready.")]
    RotateCerts(RotateCertsArgs),
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Load local image tarballs onto a hosted cluster's real nodes and wait until they have them.
    // Lines broken by hand, each within 100 columns (see `every_help_fits_in_100_columns`).
    #[command(long_about = "Load local image tarballs onto a hosted cluster's real nodes.\n\n\
        Real nodes pull from no registry. Each FILE must be an image archive whose images have\n\
        names: an OCI image layout whose index.json names its manifests (annotation\n\
        io.containerd.image.name, or org.opencontainers.image.ref.name as a full reference such\n\
        as example.com/app:1), or a `docker save` archive of tagged images. Nothing is copied\n\
        unless every file is one, and the cluster has real nodes (a NodePool's).\n\n\
        The files are copied (to a temporary name, then renamed) into the cluster's image\n\
        directory on this host, <node images dir>/clusters/NAMESPACE.CLUSTER, which the NodePool\n\
        controller declares as extraImagesDir of the cluster's real nodes. Their node agents\n\
        import new and changed tarballs of it into the nodes' containerd within seconds,\n\
        restarting nothing. The node agents of a local fleet share this host's directory; a\n\
        node agent on another machine imports only what is at the same path there, so copy the\n\
        file to that path on those machines too.\n\n\
        Waits (up to --timeout) until every real node of the cluster reports every image in its\n\
        Machine's status.realNodes[].images, then prints NODE / MACHINE / IMAGE / STATUS. Exits 1\n\
        when an import failed (with ctr's error) or on timeout. Pods use the images by name with\n\
        imagePullPolicy: Never.\n\n\
        Example:\n  flotilla images load --cluster c1 hello.tar\n  \
        kubectl run hello --image=flotilla.local/hello:1 --image-pull-policy=Never")]
    Load(LoadArgs),
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct LoadArgs {
    /// Image tarballs: OCI image layouts or `docker save` archives, their images named.
    #[arg(required = true, value_name = "FILE.tar")]
    pub files: Vec<std::path::PathBuf>,
    /// Name of the hosted cluster whose real nodes get the images.
    #[arg(long)]
    pub cluster: String,
    #[command(flatten)]
    pub target: Target,
    /// Seconds to wait for every node to report every image (then exit 1, saying what is missing)
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
}

/// Which hub and namespace the HostedCluster lives in.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// Namespace of the HostedCluster on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Return once the change is written, without waiting for the operator
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait before giving up (then exit 1, saying what is not done)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Supervised processes on the Machines, run by their node agents.
    Process,
    /// Deployments in the meta cluster, namespace kok-NAME.
    Kubernetes,
}

impl From<RuntimeArg> for Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Process => Runtime::Process,
            RuntimeArg::Kubernetes => Runtime::Kubernetes,
        }
    }
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct CreateArgs {
    /// Name of the cluster (lowercase letters, digits, '-'); also its name in the fleet.
    pub name: String,
    /// Kubernetes version of the control plane and the nodes.
    #[arg(long, default_value = DEFAULT_VERSION)]
    pub version: String,
    /// etcd members, each on its own Machine.
    #[arg(long, default_value = "1", value_parser = etcd_members_parser())]
    pub etcd_members: i32,
    /// etcd version [default: the version of the etcd binary in the cache]
    #[arg(long)]
    pub etcd_version: Option<String>,
    /// Where the control plane runs
    ///
    /// The cluster's etcd runs the same way: members on the Machines, or a
    /// StatefulSet in the meta cluster.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Process)]
    pub runtime: RuntimeArg,
    /// Instances of each control-plane component, 1-5 (more elect a leader)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=5))]
    pub replicas: i32,
    /// Worker nodes (hollow kubelets on the Machines); 0 for none
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub nodes: i32,
    /// Install no add-ons (by default: coredns).
    #[arg(long)]
    pub no_addons: bool,
    /// Run the control plane only on Machines labelled
    /// kok.flotilla.io/machine-pool=POOL (a lost one's instances move to
    /// another of the pool) [default: any Machine]
    #[arg(long, value_name = "POOL")]
    pub machine_pool: Option<String>,
    /// Run the worker nodes only on Machines labelled
    /// kok.flotilla.io/machine-pool=POOL [default: any Machine]
    #[arg(long, value_name = "POOL")]
    pub node_pool: Option<String>,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

fn etcd_members_parser() -> impl clap::builder::TypedValueParser<Value = i32> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["1", "3", "5"]).map(|s| match s.as_str() {
        "3" => 3,
        "5" => 5,
        _ => 1,
    })
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct GetArgs {
    /// Show this cluster in detail; without it, list the clusters.
    pub name: Option<String>,
    /// List the clusters of every namespace.
    #[arg(long, short = 'A', conflicts_with = "name")]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub list: crate::output::ListArgs,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct KubeconfigArgs {
    /// Name of the hosted cluster.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct UpgradeArgs {
    /// Name of the hosted cluster.
    pub name: String,
    /// The Kubernetes version to move to (one minor version at a time).
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct DeleteArgs {
    /// Name of the hosted cluster.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct RotateCertsArgs {
    /// Name of the hosted cluster.
    pub name: String,
    /// Also replace the CAs (kubeconfigs fetched before stop working)
    #[arg(long)]
    pub ca: bool,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

impl Target {
    /// A client of the hub.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.hub.client().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kokctl::render::WIDTH;

    #[test]
    fn flags_parse_with_their_defaults_and_limits() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: HostedCommand,
        }
        let Cli { command: HostedCommand::Create(args) } =
            Cli::try_parse_from(["x", "create", "c1"]).unwrap()
        else {
            panic!("not create")
        };
        assert_eq!(args.version, "1.37.2");
        assert_eq!((args.etcd_members, args.replicas, args.nodes), (1, 1, 1));
        assert_eq!(args.runtime, RuntimeArg::Process);
        assert_eq!(
            (args.target.namespace.as_str(), args.wait.timeout, args.wait.no_wait),
            ("default", 300, false)
        );
        assert!(Cli::try_parse_from(["x", "create", "c1", "--etcd-members", "3"]).is_ok());
        assert!(
            Cli::try_parse_from(["x", "create", "c1", "--etcd-members", "2"]).is_err(),
            "even member count"
        );
        assert!(Cli::try_parse_from(["x", "create", "c1", "--replicas", "6"]).is_err());
        assert!(Cli::try_parse_from(["x", "get", "c1", "-A"]).is_err(), "a name is in one namespace");
        assert!(Cli::try_parse_from(["x", "upgrade", "c1"]).is_err(), "--version is required");
        let Cli { command: HostedCommand::RotateCerts(r) } =
            Cli::try_parse_from(["x", "rotate-certs", "c1", "--ca", "-n", "team"]).unwrap()
        else {
            panic!("not rotate-certs")
        };
        assert!(r.ca);
        assert_eq!(r.target.namespace, "team");

        #[derive(Parser)]
        struct Images {
            #[command(subcommand)]
            command: ImagesCommand,
        }
        let Images { command: ImagesCommand::Load(load) } =
            Images::try_parse_from(["x", "load", "--cluster", "c1", "a.tar", "b.tar"]).unwrap();
        assert_eq!(load.cluster, "c1");
        assert_eq!(load.files.len(), 2);
        assert_eq!((load.target.namespace.as_str(), load.timeout), ("default", 120));
        assert!(Images::try_parse_from(["x", "load", "--cluster", "c1"]).is_err(), "a file is required");
        assert!(Images::try_parse_from(["x", "load", "a.tar"]).is_err(), "--cluster is required");
    }

    #[test]
    fn every_help_fits_in_100_columns() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        #[command(name = "flotilla cluster")]
        struct Cli {
            #[command(subcommand)]
            command: HostedCommand,
        }
        let mut cli = Cli::command();
        cli.build();
        let mut helps = vec![cli.render_help().to_string()];
        for sub in cli.get_subcommands_mut() {
            helps.push(sub.render_help().to_string());
            helps.push(sub.render_long_help().to_string());
        }
        assert_eq!(helps.len(), 1 + 2 * 7, "six commands and clap's help");
        #[derive(Parser)]
        #[command(name = "flotilla images")]
        struct Images {
            #[command(subcommand)]
            command: ImagesCommand,
        }
        let mut images = Images::command();
        images.build();
        helps.push(images.render_help().to_string());
        for sub in images.get_subcommands_mut() {
            helps.push(sub.render_help().to_string());
            helps.push(sub.render_long_help().to_string());
        }
        let too_wide: Vec<String> = helps
            .iter()
            .flat_map(|h| h.lines())
            .filter(|l| l.chars().count() > WIDTH)
            .map(|l| format!("{} columns: {l}", l.chars().count()))
            .collect();
        assert!(too_wide.is_empty(), "{}", too_wide.join("\n"));
    }
}
