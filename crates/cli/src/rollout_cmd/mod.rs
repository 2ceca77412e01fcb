//! Progressive delivery from the command line: `flotilla rollout list |
//! status | history | pause | resume | promote | abort | undo`. The hub writes a
//! `Rollout` (rollout.flotilla.io/v1alpha1) for every template a
//! `RolloutStrategy` selects; these commands read its status and its kept
//! revisions (`ControllerRevision`s) and write the user's controls as its
//! annotations, or (undo) a kept revision back into the template.
//!
//! The decisions are pure and tested here: `names` (which Rollout NAME or
//! KIND/NAME means), `render` (the status and history tables, time left), `list` (the rows
//! of `rollout list`),
//! `control` (the annotations each control writes, or why it makes no
//! sense now), `undo` (which revision, the template with its content);
//! `hub` reads and writes the API around them.

mod args;
mod control;
mod hub;
mod list;
mod names;
mod render;
mod undo;

use clap::Subcommand;

pub use args::{HistoryArgs, ListRolloutsArgs, NameArgs, PromoteArgs, StatusArgs, UndoArgs};

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// List the Rollouts: template, phase, wave, revisions, clusters healthy on the revision.
    #[command(
        visible_alias = "get",
        long_about = "List the Rollouts (one per template a RolloutStrategy selects).\n\n\
        Columns: NAME, TEMPLATE (kind/name), PHASE, WAVE (current/of), REVISION (rolling out \
        or current), STABLE (the last that completed), HEALTHY (clusters healthy on the \
        revision / clusters given it, of every target), AGE; -o wide adds the STRATEGY, the \
        TIME LEFT in the soak or to the wave's deadline, and the MESSAGE. -o json|yaml prints \
        the objects; -l selects by label (-A: every namespace).\n\n\
        Example: flotilla rollout list -A -o wide"
    )]
    List(ListRolloutsArgs),
    /// Show a rollout: its waves, each cluster's revision and gate, the time left.
    #[command(
        long_about = "Show a rollout: its waves, each cluster's revision and gate, the time left.\n\n\
        NAME is the Rollout's name (as `kubectl get rollouts` lists them, e.g. web-deployment) or \
        the template's KIND/NAME (deployment/web).\n\n\
        Shows the revision rolling out and the stable one, the phase (Progressing, Soaking, \
        Paused, Complete, RolledBack) with the time left in the current wave's soak or to its \
        progress deadline, the controls in effect, the failure that rolled a revision back, then \
        every target cluster by wave: the revision it is given (new or stable), the revision its \
        member runs, its health gate (Healthy, Progressing, Failed, Unreachable) and why.\n\n\
        Like `kubectl rollout status`, it watches by default when stdout is a terminal (a live \
        display, refreshed every second) until the rollout is Complete or RolledBack; --watch \
        watches anyway (printing a line each time the rollout moves), --no-watch prints once.\n\n\
        Exit code: 0 when Complete (or, printing once, still under way); 1 when RolledBack, on \
        --timeout, or when the Rollout does not exist."
    )]
    Status(StatusArgs),
    /// List a rollout's kept revisions, newest first, with what changed.
    #[command(long_about = "List a rollout's kept revisions, newest first.\n\n\
        The hub keeps the last revisions of a template (the strategy's historyLimit, default \
        10) as ControllerRevisions in the template's namespace. Each row: the revision's number, \
        its hash (the Rollout's status.revision names it), its age, whether it is the current \
        one (what the template says), the stable one (the last that completed) or the one that \
        failed, and what changed from the revision before it, one change per line.")]
    History(HistoryArgs),
    /// Hold a rollout: no next wave starts until `resume`.
    #[command(long_about = "Hold a rollout: no next wave starts until `flotilla rollout resume`.\n\n\
        Sets the annotation rollout.flotilla.io/paused=true on the Rollout. The current wave \
        still rolls out, and a failed gate still rolls the revision back. Pausing a Complete \
        rollout holds the next change after its first wave.")]
    Pause(NameArgs),
    /// Let a paused rollout go on.
    #[command(long_about = "Let a paused rollout go on (removes rollout.flotilla.io/paused).")]
    Resume(NameArgs),
    /// Skip the current wave's soak, or (--all) roll out to every remaining wave now.
    #[command(
        long_about = "Skip the current wave's soak, or (--all) roll out to every remaining wave now.\n\n\
        Sets rollout.flotilla.io/promote=<revision>/<wave> (or <revision>/all) on the Rollout, \
        naming the revision and wave from its status, so a promotion never carries over to a \
        later revision. The next wave still waits until the current one is healthy; with --all \
        every cluster is given the revision at once and the rollout is Complete when all are \
        healthy. Refused when no rollout is under way (Complete or RolledBack)."
    )]
    Promote(PromoteArgs),
    /// Roll the revision under way back now, everywhere it reached.
    #[command(long_about = "Roll the revision under way back now.\n\n\
        Sets rollout.flotilla.io/abort=<revision> on the Rollout. Every cluster given the \
        revision goes back to the stable one, and the revision is not tried again until the \
        template changes. The template itself is unchanged: `flotilla rollout undo` writes the \
        stable revision back into it. Refused when no rollout is under way.")]
    Abort(NameArgs),
    /// Write a kept revision back into the template: a new change that rolls out in waves.
    #[command(long_about = "Write a kept revision back into the template.\n\n\
        Like `kubectl rollout undo`, this is a new change of the template that rolls out in \
        waves again (with its soaks and gates). Default: the stable revision when another one \
        is rolling out or was rolled back, else the newest kept revision before the current one \
        that did not fail; --to-revision N picks one from `flotilla rollout history`.\n\n\
        The template keeps its own metadata (name, labels, annotations) and its spec.replicas \
        (revisions do not carry replicas); everything else (its spec, or a ConfigMap's data) \
        becomes the revision's, fields the revision does not have are removed.\n\n\
        Override policies (OverridePolicy, ClusterOverridePolicy) are separate objects and are \
        NOT undone: if the revision was made with other overrides, change them yourself.")]
    Undo(UndoArgs),
}

pub async fn run(cmd: RolloutCommand) -> anyhow::Result<bool> {
    match cmd {
        RolloutCommand::List(args) => hub::list(args).await,
        RolloutCommand::Status(args) => hub::status(args).await,
        RolloutCommand::History(args) => hub::history(args).await,
        RolloutCommand::Pause(args) => hub::control(args, control::Action::Pause).await,
        RolloutCommand::Resume(args) => hub::control(args, control::Action::Resume).await,
        RolloutCommand::Promote(args) => {
            hub::control(args.target, control::Action::Promote { all: args.all }).await
        }
        RolloutCommand::Abort(args) => hub::control(args, control::Action::Abort).await,
        RolloutCommand::Undo(args) => hub::undo(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: RolloutCommand,
    }

    #[test]
    fn the_flags_parse_like_kubectl() {
        let Ok(Cli { cmd: RolloutCommand::Status(s) }) =
            Cli::try_parse_from(["x", "status", "deployment/web", "-n", "shop", "-w", "--timeout", "60"])
        else {
            panic!("status did not parse");
        };
        assert_eq!(
            (s.target.name.as_str(), s.target.namespace.as_str(), s.watch, s.timeout),
            ("deployment/web", "shop", true, 60)
        );
        assert!(Cli::try_parse_from(["x", "status", "a", "--watch", "--no-watch"]).is_err());
        let Ok(Cli { cmd: RolloutCommand::Promote(p) }) = Cli::try_parse_from(["x", "promote", "a", "--all"])
        else {
            panic!("promote did not parse");
        };
        assert!(p.all);
        assert_eq!(p.target.namespace, "default");
        let Ok(Cli { cmd: RolloutCommand::Undo(u) }) =
            Cli::try_parse_from(["x", "undo", "a", "--to-revision", "2"])
        else {
            panic!("undo did not parse");
        };
        assert_eq!(u.to_revision, Some(2));
        assert!(Cli::try_parse_from(["x", "pause"]).is_err(), "a name is needed");
        let Ok(Cli { cmd: RolloutCommand::List(l) }) =
            Cli::try_parse_from(["x", "get", "-A", "-o", "wide", "-l", "team=web"])
        else {
            panic!("get (list) did not parse");
        };
        assert!(l.scope.all_namespaces && l.list.wide());
        assert_eq!(l.list.selector.as_deref(), Some("team=web"));
        let Ok(Cli { cmd: RolloutCommand::Status(s) }) = Cli::try_parse_from(["x", "status", "a", "-ojson"])
        else {
            panic!("status -o did not parse");
        };
        assert_eq!(s.output, Some(crate::output::OutputFormat::Json));
        assert!(
            Cli::try_parse_from(["x", "status", "a", "-o", "yaml", "--watch"]).is_err(),
            "print once or watch"
        );
        let Ok(Cli { cmd: RolloutCommand::History(h) }) =
            Cli::try_parse_from(["x", "history", "a", "-o", "yaml"])
        else {
            panic!("history -o did not parse");
        };
        assert_eq!((h.target.name.as_str(), h.output), ("a", Some(crate::output::OutputFormat::Yaml)));
    }
}
