use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};
use crate::{Binaries, Error, Result};

/// A single-member etcd on loopback (plain HTTP: it is reachable only from
/// this machine). Several clusters may share one, each under its own prefix.
#[derive(Debug)]
pub struct Etcd {
    process: ManagedProcess,
    client_url: String,
    data_dir: PathBuf,
    /// Owns the data directory when it lives in memory (see `start_in_memory`).
    _memory_dir: Option<tempfile::TempDir>,
}

const START_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Etcd {
    /// Starts etcd with its data and log under `dir`, and waits until it is
    /// healthy.
    pub async fn start(binaries: &Binaries, dir: &Path) -> Result<Etcd> {
        Self::start_with_data(binaries, dir, dir.join("etcd-data"), None).await
    }

    /// Like [`start`](Self::start), but keeps the data in a temporary
    /// directory under `/dev/shm` when that is available: throw-away clusters
    /// start several times faster without an fsync per write. The data goes
    /// away with the handle.
    pub async fn start_in_memory(binaries: &Binaries, dir: &Path) -> Result<Etcd> {
        let shm = Path::new("/dev/shm");
        let memory_dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("flotilla-etcd-").tempdir_in(shm).ok()
        } else {
            None
        };
        match memory_dir {
            Some(m) => {
                let data_dir = m.path().join("etcd-data");
                Self::start_with_data(binaries, dir, data_dir, Some(m)).await
            }
            None => Self::start(binaries, dir).await,
        }
    }

    async fn start_with_data(
        binaries: &Binaries,
        dir: &Path,
        data_dir: PathBuf,
        mut memory_dir: Option<tempfile::TempDir>,
    ) -> Result<Etcd> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(binaries, dir, &data_dir).await {
                Ok(mut etcd) => {
                    etcd._memory_dir = memory_dir.take();
                    return Ok(etcd);
                }
                Err(e) if is_port_clash(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Config("etcd never started".into())))
    }

    async fn try_start(binaries: &Binaries, dir: &Path, data_dir: &Path) -> Result<Etcd> {
        let client_port = free_port().map_err(|e| Error::io(dir, e))?;
        let peer_port = free_port().map_err(|e| Error::io(dir, e))?;
        let data_dir = data_dir.to_path_buf();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let spec = ProcessSpec::new("etcd", binaries.path("etcd"), dir.join("logs/etcd.log")).args([
            "--name=default".to_string(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--initial-cluster-state=new".to_string(),
            // Keep a test's etcd small and quick to start.
            "--quota-backend-bytes=2147483648".to_string(),
            "--snapshot-count=10000".to_string(),
            "--logger=zap".to_string(),
            "--log-level=warn".to_string(),
        ]);
        let mut process = ManagedProcess::spawn(spec)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            process.check_running()?;
            if health_ok(client_port).await {
                return Ok(Etcd { process, client_url, data_dir, _memory_dir: None });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "etcd to become healthy".into(),
                    seconds: READY_TIMEOUT.as_secs(),
                    detail: format!(
                        "; last lines of its log:\n{}",
                        crate::process::log_tail(process.log_path(), 15)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    pub fn process_mut(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }
}

pub(crate) fn is_port_clash(e: &Error) -> bool {
    matches!(e, Error::Exited { log_tail, .. } if log_tail.contains("address already in use"))
}

/// GET /health on the client port, with a hand-written HTTP/1.0 request:
/// it is the only HTTP etcd needs and keeps this crate free of an HTTP client.
async fn health_ok(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).contains("\"health\":\"true\""))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(true)))
}
