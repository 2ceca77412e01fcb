//! The `--kubeconfig` flag of every command that talks to the hub.

use std::path::PathBuf;

use clap::Args;
use kube::Client;

#[derive(Args, Debug, Clone)]
pub struct HubKubeconfig {
    /// Kubeconfig of the hub (admin rights).
    #[arg(long = "kubeconfig", env = "FLOTILLA_HUB_KUBECONFIG", default_value_os_t = crate::paths::default_state_dir().join("hub.kubeconfig"))]
    pub path: PathBuf,
}

impl HubKubeconfig {
    pub async fn client(&self) -> anyhow::Result<Client> {
        let (client, _) =
            flotilla_agent::client_from_kubeconfig(&self.path).await.map_err(anyhow::Error::msg)?;
        Ok(client)
    }
}
