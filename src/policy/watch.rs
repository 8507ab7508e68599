//! Following the policy file: a background thread reloads the store when the file or its tests change.
//!
//! The watch is on the file's directory, not the file: editors and config
//! managers replace a file by renaming another over it (and Kubernetes swaps a
//! `..data` symlink), which a watch on the file itself would lose. Events are
//! debounced (a save is a burst of them); if the file is briefly absent when
//! the burst ends, the thread waits a little for it to come back. The reload
//! itself ([`PolicyStore::reload`]) logs and counts its outcome. The tests
//! directory is watched too: fixing a test that made a new policy fail lets
//! that policy through without touching the policy file again.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{PolicyError, PolicyStore};

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How many debounce periods to wait for an absent file to reappear before reloading anyway.
const ABSENT_RETRIES: u32 = 10;

enum Message {
    Event(notify::Result<Event>),
    Stop,
}

/// Keeps the watch alive; dropping it stops the watch and joins its thread.
pub struct WatchGuard {
    watcher: Option<RecommendedWatcher>,
    stop: Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.watcher.take();
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Which events concern the policy.
struct Target {
    name: OsString,
    tests_dir: Option<PathBuf>,
}

impl Target {
    fn concerns(&self, event: &Event) -> bool {
        if let EventKind::Access(kind) = event.kind {
            // Opening or reading (our own reloads do) changes nothing; closing after a write does.
            if !matches!(kind, AccessKind::Close(AccessMode::Write)) {
                return false;
            }
        }
        if event.paths.is_empty() || event.need_rescan() {
            return true;
        }
        event.paths.iter().any(|path| {
            let named = path
                .file_name()
                .is_some_and(|name| name == self.name || name.to_string_lossy().starts_with(".."));
            named
                || self
                    .tests_dir
                    .as_deref()
                    .is_some_and(|dir| path.starts_with(dir))
        })
    }
}

impl PolicyStore {
    /// Watches the policy file (through its directory) and its tests directory,
    /// reloading on change from a background thread. The thread holds only a
    /// weak reference: it ends when the guard or the store is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchGuard, PolicyError> {
        let origin = self.file().display().to_string();
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            PolicyError::single(&origin, format!("cannot watch {what}: {err}"))
        };
        let name = self
            .file()
            .file_name()
            .ok_or_else(|| PolicyError::single(&origin, "the policy path names no file"))?
            .to_owned();
        let dir = match self.file().parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watch is being torn down.
            let _ = events.send(Message::Event(event));
        })
        .map_err(|err| fail("the policy file", &err))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|err| fail(&format!("directory {}", dir.display()), &err))?;
        if let Some(tests) = self.tests_dir() {
            watcher
                .watch(tests, RecursiveMode::Recursive)
                .map_err(|err| fail(&format!("directory {}", tests.display()), &err))?;
        }
        let target = Target {
            name,
            tests_dir: self.tests_dir().map(Path::to_owned),
        };
        let store = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("policy-watch".to_owned())
            .spawn(move || follow(&store, &rx, &target))
            .map_err(|err| fail("the policy file (no thread)", &err))?;
        tracing::info!(file = %origin, "watching the policy file for changes");
        Ok(WatchGuard {
            watcher: Some(watcher),
            stop: tx,
            thread: Some(thread),
        })
    }
}

/// The watch thread: debounce events, then reload.
fn follow(store: &Weak<PolicyStore>, rx: &Receiver<Message>, target: &Target) {
    let mut due: Option<Instant> = None;
    let mut absent = 0;
    loop {
        let message = match due {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match message {
            Ok(Message::Event(Ok(event))) => {
                if target.concerns(&event) {
                    due = Some(Instant::now() + DEBOUNCE);
                }
            }
            Ok(Message::Event(Err(error))) => {
                tracing::warn!(%error, "policy file watch error; reloading to be safe");
                due = Some(Instant::now() + DEBOUNCE);
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let Some(store) = store.upgrade() else {
                    return;
                };
                if !store.file().exists() && absent < ABSENT_RETRIES {
                    // Replaced by delete-then-create: give it a moment to come back.
                    absent += 1;
                    due = Some(Instant::now() + DEBOUNCE);
                    continue;
                }
                absent = 0;
                due = None;
                // The outcome is logged and counted by reload itself.
                let _ = store.reload();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    use super::*;

    fn target() -> Target {
        Target {
            name: OsString::from("policy.toml"),
            tests_dir: Some(PathBuf::from("/etc/caf/policy-tests")),
        }
    }

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn changes_to_the_policy_file_or_its_tests_concern_the_watch() {
        let target = target();
        for (kind, path) in [
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "/etc/caf/policy.toml",
            ),
            (EventKind::Create(CreateKind::File), "/etc/caf/policy.toml"),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/etc/caf/policy.toml",
            ),
            (
                EventKind::Modify(ModifyKind::Any),
                "/etc/caf/policy-tests/fixtures/1.json",
            ),
            (EventKind::Create(CreateKind::Any), "/etc/caf/..data"),
        ] {
            assert!(target.concerns(&event(kind, path)), "{kind:?} {path}");
        }
    }

    #[test]
    fn reads_and_other_files_do_not_concern_the_watch() {
        let target = target();
        for (kind, path) in [
            (
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/etc/caf/policy.toml",
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "/etc/caf/policy.toml",
            ),
            (EventKind::Modify(ModifyKind::Any), "/etc/caf/broker.toml"),
            (
                EventKind::Modify(ModifyKind::Any),
                "/etc/caf/.policy.toml.swp",
            ),
        ] {
            assert!(!target.concerns(&event(kind, path)), "{kind:?} {path}");
        }
    }
}
