//! Following a file that operators edit: a background thread calls back when it changes.
//!
//! The watch is on the file's directory, not the file: editors and config
//! managers replace a file by renaming another over it (and Kubernetes swaps a
//! `..data` symlink), which a watch on the file itself would lose. Events are
//! debounced (a save is a burst of them); if the file is briefly absent when
//! the burst ends, the thread waits a little for it to come back. A directory
//! that belongs with the file (the policy's tests) may be watched with it.
//! The policy file and the revoked token ids are followed this way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// Quiet time after the last event before calling back.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How many debounce periods to wait for an absent file to reappear before calling back anyway.
const ABSENT_RETRIES: u32 = 10;

/// Why a watch could not start; the message names what could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {what}: {error}")]
pub struct WatchError {
    what: String,
    error: String,
}

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

/// Which events concern the watched file.
struct Target {
    name: OsString,
    also: Option<PathBuf>,
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
                    .also
                    .as_deref()
                    .is_some_and(|dir| path.starts_with(dir))
        })
    }
}

/// Watches `file` (through its directory) and, recursively, the directory
/// `also`, calling `changed` from a background thread after each burst of
/// changes. `changed` returns `false` when whatever it reloads is gone: the
/// thread then ends, as it does when the guard is dropped. `label` names the
/// file in errors and logs and the thread.
pub fn watch(
    file: &Path,
    also: Option<&Path>,
    label: &str,
    mut changed: impl FnMut() -> bool + Send + 'static,
) -> Result<WatchGuard, WatchError> {
    let fail = |what: String, error: &dyn std::fmt::Display| WatchError {
        what,
        error: error.to_string(),
    };
    let name = file
        .file_name()
        .ok_or_else(|| fail(label.to_owned(), &"the path names no file"))?
        .to_owned();
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only when the watch is being torn down.
        let _ = events.send(Message::Event(event));
    })
    .map_err(|err| fail(label.to_owned(), &err))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|err| fail(format!("directory {}", dir.display()), &err))?;
    if let Some(also) = also {
        watcher
            .watch(also, RecursiveMode::Recursive)
            .map_err(|err| fail(format!("directory {}", also.display()), &err))?;
    }
    let target = Target {
        name,
        also: also.map(Path::to_owned),
    };
    let file = file.to_owned();
    let thread_label = label.to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("watch {label}"))
        .spawn(move || follow(&file, &rx, &target, &thread_label, &mut changed))
        .map_err(|err| fail(format!("{label} (no thread)"), &err))?;
    Ok(WatchGuard {
        watcher: Some(watcher),
        stop: tx,
        thread: Some(thread),
    })
}

/// The watch thread: debounce events, then call back.
fn follow(
    file: &Path,
    rx: &Receiver<Message>,
    target: &Target,
    label: &str,
    changed: &mut dyn FnMut() -> bool,
) {
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
                tracing::warn!(file = label, %error, "file watch error; reloading to be safe");
                due = Some(Instant::now() + DEBOUNCE);
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if !file.exists() && absent < ABSENT_RETRIES {
                    // Replaced by delete-then-create: give it a moment to come back.
                    absent += 1;
                    due = Some(Instant::now() + DEBOUNCE);
                    continue;
                }
                absent = 0;
                due = None;
                if !changed() {
                    return;
                }
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
            also: Some(PathBuf::from("/etc/caf/policy-tests")),
        }
    }

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn changes_to_the_file_or_the_directory_beside_it_concern_the_watch() {
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
