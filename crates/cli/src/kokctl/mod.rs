//! Hosted clusters from the command line: `flotilla cluster create | get |
//! kubeconfig | upgrade | delete | rotate-certs`, and `flotilla images
//! load` (image tarballs onto a hosted cluster's real nodes, `images`). Each command writes the
//! HostedCluster (and, for `create`, its EtcdCluster) on the hub, then —
//! unless `--no-wait` — polls its status until the hub's operators have
//! done the work, showing one progress line.
//!
//! The decisions live elsewhere, pure and tested: the objects built from
//! the flags in `flotilla_api::kok_request`, what a status says is still
//! missing in `flotilla_kok_core::wait`; here `args` (the flags), `render`
//! (the tables), `progress` (the waiting), and the commands (`create`,
//! `manage`) that read and write the API around them.

mod args;
mod create;
mod images;
mod manage;
mod progress;
mod render;

pub use args::{HostedCommand, ImagesCommand, DEFAULT_VERSION};

pub async fn run(cmd: HostedCommand) -> anyhow::Result<bool> {
    match cmd {
        HostedCommand::Create(args) => create::create(args).await,
        HostedCommand::Get(args) => manage::get(args).await,
        HostedCommand::Kubeconfig(args) => manage::kubeconfig(args).await,
        HostedCommand::Upgrade(args) => manage::upgrade(args).await,
        HostedCommand::Delete(args) => manage::delete(args).await,
        HostedCommand::RotateCerts(args) => manage::rotate_certs(args).await,
    }
}

pub async fn images(cmd: ImagesCommand) -> anyhow::Result<bool> {
    match cmd {
        ImagesCommand::Load(args) => images::load(args).await,
    }
}
