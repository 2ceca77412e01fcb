//! The `--kubeconfig` and `--context` flags of every command that talks to
//! the hub, and where the hub's kubeconfig comes from when none is given.
//!
//! Precedence (first that is set wins; [`resolve`] decides, pure):
//! 1. `--kubeconfig FILE`;
//! 2. `$FLOTILLA_HUB_KUBECONFIG` (a single file: Flotilla's own variable,
//!    so that scripts can point Flotilla at a hub without changing where
//!    kubectl goes);
//! 3. `$KUBECONFIG`, as kubectl reads it: a colon-separated list of files,
//!    missing ones skipped, merged (the first file to set a value wins,
//!    `current-context` included);
//! 4. the local fleet's `~/.flotilla/hub.kubeconfig` (what `flotilla up` writes).
//!
//! `--context NAME` then picks a context of that kubeconfig instead of its
//! `current-context`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// How kubeconfig sources are described in `--help`.
pub const HELP: &str = "Kubeconfig of the hub [default: $FLOTILLA_HUB_KUBECONFIG, then $KUBECONFIG \
(colon-separated files, merged as kubectl does), then the local fleet's ~/.flotilla/hub.kubeconfig]";

#[derive(Args, Debug, Clone, Default)]
pub struct HubKubeconfig {
    #[arg(long = "kubeconfig", value_name = "FILE", help = HELP)]
    pub path: Option<PathBuf>,
    /// The kubeconfig context to use [default: its current-context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Where the hub's kubeconfig was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(PathBuf),
    FlotillaEnv(PathBuf),
    /// `$KUBECONFIG`'s files that exist, in order (merged first to last).
    KubeconfigEnv(Vec<PathBuf>),
    LocalFleet(PathBuf),
}

impl Source {
    /// The files to read, merged in this order.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Source::Flag(p) | Source::FlotillaEnv(p) | Source::LocalFleet(p) => vec![p.clone()],
            Source::KubeconfigEnv(paths) => paths.clone(),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(p) => write!(f, "{} (--kubeconfig)", p.display()),
            Source::FlotillaEnv(p) => write!(f, "{} ($FLOTILLA_HUB_KUBECONFIG)", p.display()),
            Source::KubeconfigEnv(paths) => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(f, "{} ($KUBECONFIG)", list.join(":"))
            }
            Source::LocalFleet(p) => write!(f, "{} (the local fleet)", p.display()),
        }
    }
}

/// What [`resolve`] looks at: the flag, the two variables (unset or empty
/// count as not set) and the local fleet's file.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub flag: Option<&'a Path>,
    pub flotilla_env: Option<&'a OsStr>,
    pub kubeconfig_env: Option<&'a OsStr>,
    pub local_fleet: &'a Path,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotFound {
    #[error(
        "$KUBECONFIG names no file that exists ({0}); set it to the hub's kubeconfig, unset it, or pass --kubeconfig FILE"
    )]
    KubeconfigEnvMissing(String),
    #[error(
        "no kubeconfig for the hub: no --kubeconfig, $FLOTILLA_HUB_KUBECONFIG and $KUBECONFIG are not set, \
         and there is no local fleet ({} does not exist); start one with `flotilla up` or pass --kubeconfig FILE",
        .0.display()
    )]
    Nothing(PathBuf),
}

fn set(value: Option<&OsStr>) -> Option<&OsStr> {
    value.filter(|v| !v.is_empty())
}

/// Which kubeconfig the hub is reached with (see the module's precedence).
/// `exists` says whether a file exists (kubectl skips missing `$KUBECONFIG`
/// entries; a named file that is missing is reported when read instead).
pub fn resolve(inputs: Inputs<'_>, exists: impl Fn(&Path) -> bool) -> Result<Source, NotFound> {
    if let Some(flag) = inputs.flag {
        return Ok(Source::Flag(flag.to_path_buf()));
    }
    if let Some(path) = set(inputs.flotilla_env) {
        return Ok(Source::FlotillaEnv(PathBuf::from(path)));
    }
    if let Some(list) = set(inputs.kubeconfig_env) {
        let named: Vec<PathBuf> = std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()).collect();
        if !named.is_empty() {
            let present: Vec<PathBuf> = named.iter().filter(|p| exists(p)).cloned().collect();
            if present.is_empty() {
                let shown: Vec<String> = named.iter().map(|p| p.display().to_string()).collect();
                return Err(NotFound::KubeconfigEnvMissing(shown.join(":")));
            }
            return Ok(Source::KubeconfigEnv(present));
        }
    }
    if exists(inputs.local_fleet) {
        return Ok(Source::LocalFleet(inputs.local_fleet.to_path_buf()));
    }
    Err(NotFound::Nothing(inputs.local_fleet.to_path_buf()))
}

/// The local fleet's hub kubeconfig, `~/.flotilla/hub.kubeconfig`.
pub fn local_fleet_kubeconfig() -> PathBuf {
    crate::paths::default_state_dir().join("hub.kubeconfig")
}

/// A resolved hub kubeconfig: the files merged, and the context to use.
pub struct LoadedKubeconfig {
    pub source: Source,
    pub kubeconfig: Kubeconfig,
    pub context: Option<String>,
}

impl LoadedKubeconfig {
    /// The kubeconfig with the chosen context as its current one (what a
    /// single-context reader such as `token create` looks at).
    pub fn with_context_current(&self) -> Kubeconfig {
        let mut kubeconfig = self.kubeconfig.clone();
        if let Some(context) = &self.context {
            kubeconfig.current_context = Some(context.clone());
        }
        kubeconfig
    }

    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let mut config =
            kube::Config::from_custom_kubeconfig(self.kubeconfig.clone(), &options).await.map_err(|e| {
                let context = self.context.as_deref().map(|c| format!(" (context {c})")).unwrap_or_default();
                anyhow::anyhow!("invalid hub kubeconfig {}{context}: {e}", self.source)
            })?;
        // As the agents' clients: fail fast on an unreachable hub.
        config.connect_timeout = Some(std::time::Duration::from_secs(3));
        config.read_timeout = Some(std::time::Duration::from_secs(15));
        Ok(config)
    }
}

impl HubKubeconfig {
    /// An explicit kubeconfig file (as `--kubeconfig FILE`).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        HubKubeconfig { path: Some(path.into()), context: None }
    }

    /// Which kubeconfig this command uses, from the flags and environment.
    pub fn source(&self) -> Result<Source, NotFound> {
        let flotilla_env = std::env::var_os("FLOTILLA_HUB_KUBECONFIG");
        let kubeconfig_env = std::env::var_os("KUBECONFIG");
        let local_fleet = local_fleet_kubeconfig();
        resolve(
            Inputs {
                flag: self.path.as_deref(),
                flotilla_env: flotilla_env.as_deref(),
                kubeconfig_env: kubeconfig_env.as_deref(),
                local_fleet: &local_fleet,
            },
            Path::exists,
        )
    }

    /// Reads (and merges) the kubeconfig files.
    pub fn load(&self) -> anyhow::Result<LoadedKubeconfig> {
        let source = self.source()?;
        let mut merged = Kubeconfig::default();
        for file in source.files() {
            let one = Kubeconfig::read_from(&file)
                .map_err(|e| anyhow::anyhow!("cannot read the hub kubeconfig {source}: {e}"))?;
            merged = merged.merge(one).map_err(|e| anyhow::anyhow!("cannot merge {source}: {e}"))?;
        }
        Ok(LoadedKubeconfig { source, kubeconfig: merged, context: self.context.clone() })
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let loaded = self.load()?;
        let config = loaded.config().await?;
        Client::try_from(config).map_err(|e| anyhow::anyhow!("hub kubeconfig {}: {e}", loaded.source))
    }

    /// What to repeat after a suggested command so that it reaches the same
    /// hub: the flags given (the environment and default apply again anyway).
    pub fn hint_flags(&self) -> String {
        let mut out = String::new();
        if let Some(path) = &self.path {
            out.push_str(&format!(" --kubeconfig {}", path.display()));
        }
        if let Some(context) = &self.context {
            out.push_str(&format!(" --context {context}"));
        }
        out
    }
}

#[cfg(test)]
#[path = "hub_kubeconfig_tests.rs"]
mod tests;
