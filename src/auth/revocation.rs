//! Revoked tokens: the `jti`s of `auth.revoked_jti_file` and of the shared set in Redis.
//!
//! Both sets are held in memory behind atomic swaps, so that the check on
//! every request (cached token or not) is a lookup, never IO. The file is read
//! at start (unreadable: the start fails), then again when it changes and on
//! SIGHUP; a reload that cannot read it keeps the last good set. The shared
//! set, `caf-broker:revoked-jti`, is a sorted set of `jti`s scored by the
//! time (Unix seconds) after which the entry is dropped, normally the token's
//! `exp`. A task reads it every `auth.revoked_jti_refresh_ms`, prunes the
//! entries whose time has passed, and keeps the last good set while Redis
//! does not answer. Neither the logs nor the metrics carry a `jti`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::jwks::AuthSetupError;
use crate::clock::Clock;

/// The Redis key of the shared set.
pub const SHARED_REVOKED_JTI_KEY: &str = "caf-broker:revoked-jti";

/// Most entries read from the shared set: far more than a day of revocations.
const MAX_SHARED_ENTRIES: usize = 100_000;

/// Longest `jti` kept, in bytes (the verifier refuses longer ones).
pub(super) const MAX_JTI_BYTES: usize = 256;

/// Whether a text is a `jti` this broker accepts: 1 to 256 visible ASCII characters.
pub(super) fn is_jti(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_JTI_BYTES && text.bytes().all(|b| b.is_ascii_graphic())
}

/// The revoked `jti`s, from the file and from the shared set.
pub(super) struct Revocations {
    file: Option<PathBuf>,
    from_file: ArcSwap<HashSet<String>>,
    shared: ArcSwap<HashSet<String>>,
    /// Serialises file reloads (SIGHUP and the watch may ask at once).
    reloading: Mutex<()>,
}

impl Revocations {
    /// Reads `file`, if any; an unreadable file is a setup error.
    pub fn load(file: Option<&Path>) -> Result<Self, AuthSetupError> {
        let from_file = match file {
            Some(file) => read(file).map_err(|error| AuthSetupError::ReadRevokedJti {
                path: file.to_owned(),
                error,
            })?,
            None => HashSet::new(),
        };
        Ok(Self {
            file: file.map(Path::to_owned),
            from_file: ArcSwap::from_pointee(from_file),
            shared: ArcSwap::from_pointee(HashSet::new()),
            reloading: Mutex::new(()),
        })
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.from_file.load().contains(jti) || self.shared.load().contains(jti)
    }

    /// Reads the file again; on failure the last good set stays, and the
    /// failure is logged. Without a file, does nothing.
    pub fn reload_file(&self) {
        let Some(file) = &self.file else {
            return;
        };
        let _serial = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match read(file) {
            Ok(set) => {
                tracing::info!(
                    file = %file.display(),
                    revoked = set.len(),
                    "reloaded the revoked token ids"
                );
                self.from_file.store(Arc::new(set));
            }
            Err(error) => tracing::warn!(
                file = %file.display(),
                %error,
                "cannot read the revoked token ids; keeping the last good list"
            ),
        }
    }

    fn store_shared(&self, set: HashSet<String>) {
        self.shared.store(Arc::new(set));
    }
}

/// The `jti`s of a revocation file: one per line, surrounding blanks ignored,
/// empty lines and `#` comments skipped. A line that is no `jti` is skipped
/// and counted in a warning (by line number, never by content).
fn read(file: &Path) -> std::io::Result<HashSet<String>> {
    let text = std::fs::read_to_string(file)?;
    let mut set = HashSet::new();
    let mut skipped = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if is_jti(line) {
            set.insert(line.to_owned());
        } else {
            skipped.push(index + 1);
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            file = %file.display(),
            lines = ?skipped,
            "skipping lines of the revoked token ids that are no jti (1 to 256 visible ASCII characters)"
        );
    }
    Ok(set)
}

/// The task that mirrors the shared set; dropping the handle stops it.
pub(super) struct SharedRevocations {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SharedRevocations {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SharedRevocations {
    /// Spawns the task reading the shared set into `revocations` every
    /// `period`; it holds only a weak reference and ends with them.
    pub fn spawn(
        connection: redis::aio::ConnectionManager,
        timeout: Duration,
        period: Duration,
        revocations: Weak<Revocations>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let task = tokio::spawn(mirror(connection, timeout, period, revocations, clock));
        Self { task }
    }
}

async fn mirror(
    mut connection: redis::aio::ConnectionManager,
    timeout: Duration,
    period: Duration,
    revocations: Weak<Revocations>,
    clock: Arc<dyn Clock>,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        if revocations.strong_count() == 0 {
            return;
        }
        let now = super::unix_secs(clock.as_ref());
        let read = tokio::time::timeout(timeout, read_shared(&mut connection, now)).await;
        let Some(revocations) = revocations.upgrade() else {
            return;
        };
        let error = match read {
            Ok(Ok(set)) => {
                if failing {
                    tracing::info!("the shared revoked token ids can be read again");
                    failing = false;
                }
                if set.len() >= MAX_SHARED_ENTRIES {
                    tracing::warn!(
                        key = SHARED_REVOKED_JTI_KEY,
                        limit = MAX_SHARED_ENTRIES,
                        "the shared revoked token ids reach the limit read; the rest is ignored"
                    );
                }
                revocations.store_shared(set);
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        if !failing {
            tracing::warn!(
                key = SHARED_REVOKED_JTI_KEY,
                %error,
                "reading the shared revoked token ids failed; keeping the last good set"
            );
            failing = true;
        }
    }
}

/// Drops the entries whose time has passed, then reads the others.
async fn read_shared(
    connection: &mut redis::aio::ConnectionManager,
    now: u64,
) -> redis::RedisResult<HashSet<String>> {
    let (members,): (Vec<String>,) = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(SHARED_REVOKED_JTI_KEY)
        .arg("-inf")
        .arg(format!("({now}"))
        .ignore()
        .cmd("ZRANGEBYSCORE")
        .arg(SHARED_REVOKED_JTI_KEY)
        .arg(now)
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(MAX_SHARED_ENTRIES)
        .query_async(connection)
        .await?;
    Ok(members.into_iter().filter(|jti| is_jti(jti)).collect())
}
