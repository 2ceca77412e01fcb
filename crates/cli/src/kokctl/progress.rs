//! Waiting on the hub's operators with one progress line: on a terminal a
//! spinner cut to the terminal's width; otherwise (logs, CI) each new line
//! whole, wrapped. What a failure says is printed whole, wrapped.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use flotilla_kok_core::wait::Verdict;

use super::render::{wrap, WIDTH};

/// What the binary puts before an error it prints (`error: `): the first
/// line of a failure is that much shorter.
const ERROR_PREFIX: usize = "error: ".len();

/// How often a waiting command looks at the status again.
const POLL: Duration = Duration::from_millis(500);

/// One progress line: a spinner on a terminal, otherwise a line on stderr
/// each time what it says changes (for logs and CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last: String,
}

impl Progress {
    fn start() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            // `wide_msg`: cut to the terminal's width, so the line never wraps
            // and leaves copies of itself behind.
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {wide_msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar, started: Instant::now(), last: String::new() }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn show(&mut self, what: &str) {
        let line = format!("[{:>3}s] {what}", self.started.elapsed().as_secs());
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if what != self.last => eprintln!("{}", wrap(&line, WIDTH, 7)),
            None => {}
        }
        self.last = what.to_string();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Polls `look` until it says Done (→ Ok) or Failed or the time is up (→ Err).
pub async fn wait_for<F, Fut>(
    timeout: Duration,
    what: &str,
    mut look: F,
) -> anyhow::Result<(String, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Verdict, String)>>,
{
    let mut progress = Progress::start();
    let mut last_detail = String::new();
    loop {
        match look().await {
            Ok((Verdict::Done(summary), _)) => {
                progress.finish();
                return Ok((summary, progress.elapsed()));
            }
            Ok((Verdict::Failed(why), detail)) => {
                progress.finish();
                bail!(
                    "{}{}",
                    wrap(&format!("{what}: {why}"), WIDTH - ERROR_PREFIX, 2),
                    if detail.is_empty() { String::new() } else { format!("\n{}", wrap(&detail, WIDTH, 4)) }
                );
            }
            Ok((Verdict::Pending(line), detail)) => {
                progress.show(&line);
                last_detail = detail;
            }
            // The hub may be restarting: keep trying until the deadline.
            Err(e) => progress.show(&format!("cannot read from the hub: {e:#}")),
        }
        if progress.elapsed() >= timeout {
            progress.finish();
            bail!(
                "{}{}",
                wrap(
                    &format!("{what}: not done after {}s; last seen: {}", timeout.as_secs(), progress.last),
                    WIDTH - ERROR_PREFIX,
                    2
                ),
                if last_detail.is_empty() {
                    String::new()
                } else {
                    format!("\n{}", wrap(&last_detail, WIDTH, 4))
                }
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
