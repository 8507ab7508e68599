//! The witness: each signed checkpoint sent off the writer's path to `audit.witness_dir` and `audit.witness_url`, its failures counted and its lag exported.
//!
//! The writer hands each checkpoint, once durable in `checkpoints.log`, to
//! [`WitnessHandle::offer`], which only replaces the newest note waiting (a
//! newer checkpoint covers every older one) and returns at once: a slow or
//! unwritable witness never delays a record. A thread of its own writes the
//! note as `<replica>-<size, 20 digits>.checkpoint` (temporary file, fsync,
//! rename, directory fsync), and POSTs it to the witness URL over HTTPS
//! (trusting `audit.witness_ca_file` only; three tries). A failed send is counted
//! (`caf_broker_audit_witness_failures_total`) and retried with the next
//! checkpoint. `caf_broker_audit_witness_lag_seconds` is 0 while the witness
//! holds the newest checkpoint, else the seconds since the first checkpoint
//! it is missing was signed.
//!
//! At shutdown the witness gets [`CLOSE_TIMEOUT`] (2 s) to take the last
//! checkpoint: its tries all end within it, and the writer waits no longer for
//! the thread (a hung witness may hold an earlier POST). What it missed is in
//! `checkpoints.log`, and the next checkpoint after a restart covers it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::Clock;

use super::{AuditSettings, AuditSetupError, files};

/// How often the lag is brought up to date while the witness is behind.
const LAG_TICK: Duration = Duration::from_secs(1);

/// At shutdown, the longest the witness may take the last checkpoint (its
/// tries all within it), and the longest the writer waits for the witness thread:
/// a hung witness must not hold the broker's exit past
/// `server.shutdown_timeout_secs`.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A checkpoint waiting for the witness.
struct Offered {
    note: Vec<u8>,
    size: u64,
    signed_at: Instant,
}

#[derive(Default)]
struct Slot {
    /// The newest checkpoint not yet written to the witness.
    newest: Option<Offered>,
    /// When the oldest checkpoint the witness is missing was signed.
    behind_since: Option<Instant>,
    closed: bool,
}

struct State {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's side: offers checkpoints, and on drop lets the thread
/// deliver the last one and stop.
pub(super) struct WitnessHandle {
    state: Arc<State>,
    clock: Arc<dyn Clock>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread ends: what the bounded wait at shutdown waits on.
    ended: mpsc::Receiver<()>,
}

impl WitnessHandle {
    /// Starts the thread that sends each checkpoint to every witness.
    pub(super) fn start(
        witnesses: Vec<Box<dyn Witness>>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<WitnessHandle> {
        let state = Arc::new(State {
            slot: Mutex::new(Slot::default()),
            changed: Condvar::new(),
        });
        crate::telemetry::set_audit_witness_lag(0.0);
        let (ending, ended) = mpsc::channel::<()>();
        let thread = {
            let (state, clock) = (state.clone(), clock.clone());
            std::thread::Builder::new()
                .name("audit-witness".into())
                .spawn(move || {
                    let _ending = ending;
                    run(&state, &*clock, &witnesses);
                })?
        };
        Ok(WitnessHandle {
            state,
            clock,
            thread: Some(thread),
            ended,
        })
    }

    /// Hands a signed checkpoint of `size` records over; never waits for the witness.
    pub(super) fn offer(&self, note: Vec<u8>, size: u64) {
        let now = self.clock.monotonic();
        let mut slot = self.state.lock();
        slot.newest = Some(Offered {
            note,
            size,
            signed_at: now,
        });
        slot.behind_since.get_or_insert(now);
        drop(slot);
        self.state.changed.notify_one();
    }
}

impl Drop for WitnessHandle {
    /// Lets the thread deliver the last checkpoint, waiting at most
    /// [`CLOSE_TIMEOUT`]; past it, the thread is left to end with the process.
    fn drop(&mut self) {
        self.state.lock().closed = true;
        self.state.changed.notify_one();
        match self.ended.recv_timeout(CLOSE_TIMEOUT) {
            Err(RecvTimeoutError::Timeout) => tracing::warn!(
                timeout_ms = CLOSE_TIMEOUT.as_millis() as u64,
                "the witness did not take the last audit checkpoint in time; it is in checkpoints.log"
            ),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Somewhere a checkpoint is sent.
pub(super) trait Witness: Send {
    /// `last`: the broker is stopping; the send must end within [`CLOSE_TIMEOUT`].
    fn send(&self, note: &[u8], size: u64, last: bool) -> Result<(), String>;
}

/// The witnesses the settings name, for the log `replica`; a CA file that
/// does not read, or a client that cannot be built, refuses the start.
pub(super) fn from_settings(
    settings: &AuditSettings,
    replica: &str,
) -> Result<Vec<Box<dyn Witness>>, AuditSetupError> {
    let mut witnesses: Vec<Box<dyn Witness>> = Vec::new();
    if let Some(dir) = &settings.witness_dir {
        witnesses.push(Box::new(DirWitness {
            dir: dir.clone(),
            replica: replica.to_owned(),
        }));
    }
    if let Some(url) = &settings.witness_url {
        let (url, tls) = url_tls(url, settings.witness_ca_file.as_deref())?;
        witnesses.push(Box::new(UrlWitness::new(
            url,
            tls,
            Duration::from_millis(settings.witness_timeout_ms),
        )?));
    }
    Ok(witnesses)
}

/// What `caf-broker check` reads of the witness settings, as the writer
/// will: with `audit.witness_url`, the URL and `audit.witness_ca_file`, read
/// and parsed as the CA certificates of a TLS client. Nothing is sent.
pub(super) fn check(settings: &AuditSettings) -> Result<(), AuditSetupError> {
    match &settings.witness_url {
        Some(url) => url_tls(url, settings.witness_ca_file.as_deref()).map(drop),
        None => Ok(()),
    }
}

/// The witness URL, and a TLS client configuration trusting the
/// certificates of `ca_file` and no other.
fn url_tls(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<(reqwest::Url, rustls::ClientConfig), AuditSetupError> {
    let url = reqwest::Url::parse(url)
        .map_err(|e| AuditSetupError::Witness(format!("not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(AuditSetupError::Witness("not an https:// URL".to_owned()));
    }
    let Some(ca_file) = ca_file else {
        return Err(AuditSetupError::WitnessCa(
            "required with audit.witness_url".to_owned(),
        ));
    };
    let roots =
        crate::tls::trust_store(ca_file).map_err(|e| AuditSetupError::WitnessCa(e.to_string()))?;
    let tls = crate::tls::client_config(roots)
        .map_err(|e| AuditSetupError::Witness(format!("cannot configure TLS: {e}")))?;
    Ok((url, tls))
}

/// `audit.witness_url`: an HTTPS POST of the note, on a runtime of the witness thread's own.
struct UrlWitness {
    url: reqwest::Url,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// `audit.witness_timeout_ms`.
    timeout: Duration,
}

/// Tries of one POST, and the pause after a failed one (doubled each time).
const URL_TRIES: u32 = 3;
const URL_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl UrlWitness {
    fn new(
        url: reqwest::Url,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<UrlWitness, AuditSetupError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("caf-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuditSetupError::Witness(format!("cannot build the HTTPS client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                AuditSetupError::Witness(format!("cannot start the witness runtime: {e}"))
            })?;
        Ok(UrlWitness {
            url,
            client,
            runtime,
            timeout,
        })
    }

    fn post(&self, note: &[u8], timeout: Duration) -> Result<(), String> {
        let request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .timeout(timeout)
            .body(note.to_vec());
        let response = self
            .runtime
            // The request's timer needs the runtime: the future is made inside it.
            .block_on(async move { request.send().await })
            .map_err(|e| format!("POST {}: {}", self.url, error_chain(&e)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {}: answered {}", self.url, response.status()))
        }
    }
}

impl Witness for UrlWitness {
    fn send(&self, note: &[u8], _size: u64, last: bool) -> Result<(), String> {
        // The last note's tries all fit in CLOSE_TIMEOUT (a network deadline: real time).
        let deadline = last.then(|| Instant::now() + CLOSE_TIMEOUT);
        let mut pause = URL_RETRY_PAUSE;
        let mut tries = 1;
        loop {
            let timeout = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => self.timeout,
            };
            match self.post(note, timeout.min(self.timeout)) {
                Ok(()) => return Ok(()),
                Err(error) if tries >= URL_TRIES => return Err(error),
                Err(error) if deadline.is_some_and(|d| Instant::now() + pause >= d) => {
                    return Err(error);
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    tries += 1;
                }
            }
        }
    }
}

/// An error with its causes, `: `-separated (reqwest hides the cause in its display).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `audit.witness_dir`.
struct DirWitness {
    dir: PathBuf,
    replica: String,
}

impl Witness for DirWitness {
    fn send(&self, note: &[u8], size: u64, _last: bool) -> Result<(), String> {
        write_atomically(&self.dir, &checkpoint_file_name(&self.replica, size), note)
    }
}

/// `<replica>-<size>.checkpoint`, the size zero-padded so that names sort as sizes do.
pub(super) fn checkpoint_file_name(replica: &str, size: u64) -> String {
    format!("{replica}-{size:020}.checkpoint")
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        format!("cannot {what} {}: {e}", path.display())
    };
    files::create_dir_owner_only(dir).map_err(|e| fail("create", dir, e))?;
    let temporary = dir.join(format!(".{name}.tmp"));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(files::FILE_MODE)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail("write", &temporary, e));
    }
    let target = dir.join(name);
    if let Err(e) = std::fs::rename(&temporary, &target) {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail("rename into", &target, e));
    }
    files::sync_dir(dir).map_err(|e| fail("sync", dir, e))
}

/// The thread's body: write the newest checkpoint offered; keep the lag up to date.
fn run(state: &State, clock: &dyn Clock, witnesses: &[Box<dyn Witness>]) {
    let mut slot = state.lock();
    loop {
        if let Some(offered) = slot.newest.take() {
            let last = slot.closed;
            drop(slot);
            let mut failed = false;
            for witness in witnesses {
                if let Err(error) = witness.send(&offered.note, offered.size, last) {
                    failed = true;
                    crate::telemetry::record_audit_witness_failure();
                    tracing::warn!(
                        %error,
                        tree_size = offered.size,
                        "audit checkpoint not sent to the witness; retried with the next checkpoint"
                    );
                }
            }
            slot = state.lock();
            if !failed {
                // Missing now only what was offered meanwhile, if anything;
                // after a failure, the next checkpoint (covering this one) is retried.
                slot.behind_since = slot.newest.as_ref().map(|newer| newer.signed_at);
                tracing::debug!(
                    tree_size = offered.size,
                    "audit checkpoint sent to the witness"
                );
            }
        }
        let lag = slot.behind_since.map_or(0.0, |since| {
            clock
                .monotonic()
                .saturating_duration_since(since)
                .as_secs_f64()
        });
        crate::telemetry::set_audit_witness_lag(lag);
        if slot.closed && slot.newest.is_none() {
            return;
        }
        if slot.newest.is_none() {
            // Every tick, caught up or not: the gauge is then exported even
            // when the log opened before the metrics recorder was installed.
            slot = state
                .changed
                .wait_timeout(slot, LAG_TICK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_file_names_sort_as_their_sizes_do() {
        let mut names: Vec<String> = [1000, 20, 3]
            .iter()
            .map(|size| checkpoint_file_name("paris-1", *size))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "paris-1-00000000000000000003.checkpoint",
                "paris-1-00000000000000000020.checkpoint",
                "paris-1-00000000000000001000.checkpoint",
            ]
        );
    }

    #[test]
    fn a_note_is_written_whole_and_no_temporary_file_stays() {
        let dir =
            std::env::temp_dir().join(format!("caf-broker-witness-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_atomically(&dir, "a-1.checkpoint", b"note\n").unwrap();
        write_atomically(&dir, "a-1.checkpoint", b"newer\n").unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a-1.checkpoint"]);
        assert_eq!(
            std::fs::read(dir.join("a-1.checkpoint")).unwrap(),
            b"newer\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
