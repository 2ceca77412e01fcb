//! The arguments of `flotilla rollout`'s subcommands.

use clap::Args;

use crate::hub_kubeconfig::HubKubeconfig;
use crate::output::{ListArgs, NamespaceScope, OutputFormat};

/// The Rollout and where it is.
#[derive(Args, Debug, Clone)]
pub struct NameArgs {
    /// The Rollout's name (web-deployment) or its template's KIND/NAME (deployment/web).
    pub name: String,
    /// Namespace of the template and its Rollout on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: NameArgs,
    /// Watch until Complete or RolledBack (the default on a terminal).
    #[arg(long, short = 'w', conflicts_with = "no_watch")]
    pub watch: bool,
    /// Print the status once (the default when stdout is not a terminal).
    #[arg(long)]
    pub no_watch: bool,
    /// Seconds to watch before giving up (exit 1); 0: no limit.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub timeout: u64,
    /// json or yaml: print the Rollout object once (no watch); wide: the status as without it
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT", conflicts_with = "watch")]
    pub output: Option<OutputFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub target: NameArgs,
    /// json or yaml: print the kept ControllerRevisions (a List, newest first); wide: the table
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct ListRolloutsArgs {
    #[command(flatten)]
    pub scope: NamespaceScope,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

#[derive(Args, Debug, Clone)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub target: NameArgs,
    /// Every remaining wave now, not only the current wave's soak.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UndoArgs {
    #[command(flatten)]
    pub target: NameArgs,
    /// The kept revision to go back to (its number in `flotilla rollout history`).
    #[arg(long, value_name = "N")]
    pub to_revision: Option<i64>,
}
