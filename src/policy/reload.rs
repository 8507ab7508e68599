//! The live policy: lock-free snapshots for requests, and reloads that swap only a policy that passed every check.
//!
//! A reload reads the file, and when its hash differs from the live version,
//! parses it, validates it against the schema and runs the policy tests; only
//! if all of that passes is the new policy swapped in, atomically. A request
//! holds the `Arc<Policy>` it took at its start, so it finishes under that
//! policy whatever happens meanwhile. On failure the last good policy stays
//! live, the problems are logged (file, line, key: never record values) and
//! `caf_broker_policy_reload_total{result="rejected"}` is counted.
//!
//! A journal ([`PolicyStore::journal_reloads`]; the audit log in `serve`) is
//! told of every reload that changes something: an applied one before the
//! swap, so that a reload it cannot record is refused and nothing is ever
//! filtered by a version the journal does not hold; a rejected one after.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;

use crate::telemetry;

use super::{Policy, PolicyError, Problem, run_policy_tests, version_of};

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new policy is live; `from` and `to` are the versions.
    Applied { from: String, to: String },
    /// The file has the live policy's hash: nothing was swapped.
    Unchanged,
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// SIGHUP.
    Signal,
    /// The file watch saw the policy file or its tests change.
    FileWatch,
}

/// A reload that changed something, as the journal is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    pub cause: ReloadCause,
    /// The version live when the reload began.
    pub from: String,
    pub result: ReloadResult,
}

/// How a reload told to the journal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// `to` is about to be swapped in (the journal is told first).
    Applied { to: String },
    /// The file was refused for `problems` problems; `candidate` is its
    /// version when it could be read.
    Rejected {
        candidate: Option<String>,
        problems: usize,
    },
}

/// Records reloads somewhere durable; an error refuses an applied reload.
pub type ReloadJournal = Box<dyn Fn(&ReloadEvent) -> Result<(), String> + Send + Sync>;

/// How many reloads ended each way since the store was loaded (the metric, per store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadCounts {
    pub applied: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

/// Holds the live policy and reloads it from its file.
pub struct PolicyStore {
    file: PathBuf,
    tests_dir: Option<PathBuf>,
    live: ArcSwap<Policy>,
    /// Serialises reloads (SIGHUP and the watcher may ask at once); readers never take it.
    reloading: Mutex<()>,
    applied: AtomicU64,
    unchanged: AtomicU64,
    rejected: AtomicU64,
    /// Told of every applied or rejected reload, once set.
    journal: OnceLock<ReloadJournal>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("file", &self.file)
            .field("tests_dir", &self.tests_dir)
            .field("live", &self.live.load().version())
            .field("counts", &self.counts())
            .field("journal", &self.journal.get().is_some())
            .finish()
    }
}

impl PolicyStore {
    /// Loads the policy file and, when `tests_dir` is given, requires its policy
    /// tests to pass: the same checks a reload makes.
    pub fn load(file: &Path, tests_dir: Option<&Path>) -> Result<PolicyStore, PolicyError> {
        let policy = checked(file, tests_dir)?;
        Ok(PolicyStore {
            file: file.to_owned(),
            tests_dir: tests_dir.map(Path::to_owned),
            live: ArcSwap::from_pointee(policy),
            reloading: Mutex::new(()),
            applied: AtomicU64::new(0),
            unchanged: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            journal: OnceLock::new(),
        })
    }

    /// From now on, tells `journal` of every reload that is applied (before
    /// the swap: if it fails, the reload is rejected and the live policy
    /// kept) or rejected. Unchanged reloads are not told. Set once; a second
    /// journal is refused and returned.
    pub fn journal_reloads(&self, journal: ReloadJournal) -> Result<(), ReloadJournal> {
        self.journal.set(journal)
    }

    /// How many reloads were applied, unchanged or rejected so far.
    pub fn counts(&self) -> ReloadCounts {
        ReloadCounts {
            applied: self.applied.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// The live policy. A request takes this once, at its start, and uses it to the end.
    pub fn current(&self) -> Arc<Policy> {
        self.live.load_full()
    }

    /// The policy file this store reloads.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The policy tests directory run before every swap, if any.
    pub fn tests_dir(&self) -> Option<&Path> {
        self.tests_dir.as_deref()
    }

    /// Re-reads the file and swaps the policy in if it changed and passes every
    /// check; otherwise keeps the live one. Logs and counts the outcome, so a
    /// caller such as a signal handler may ignore the result. As SIGHUP asks;
    /// see [`PolicyStore::reload_for`].
    pub fn reload(&self) -> Result<ReloadOutcome, PolicyError> {
        self.reload_for(ReloadCause::Signal)
    }

    /// [`PolicyStore::reload`], telling the journal what asked for it.
    pub fn reload_for(&self, cause: ReloadCause) -> Result<ReloadOutcome, PolicyError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let file = self.file.display().to_string();
        let mut candidate = None;
        let result = self.try_reload(cause, &mut candidate);
        match &result {
            Ok(ReloadOutcome::Applied { from, to }) => {
                tracing::info!(file = %file, from = %from, to = %to, "policy reloaded");
                telemetry::record_policy_reload("applied");
                self.applied.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ReloadOutcome::Unchanged) => {
                tracing::debug!(file = %file, "policy file unchanged");
                telemetry::record_policy_reload("unchanged");
                self.unchanged.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let live = self.live.load().version().to_owned();
                tracing::warn!(
                    file = %file,
                    live = %live,
                    problems = error.problems.len(),
                    %error,
                    "policy reload rejected; the live policy is kept"
                );
                telemetry::record_policy_reload("rejected");
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let event = ReloadEvent {
                    cause,
                    from: live,
                    result: ReloadResult::Rejected {
                        candidate,
                        problems: error.problems.len(),
                    },
                };
                if let Some(Err(error)) = self.journal.get().map(|journal| journal(&event)) {
                    tracing::error!(%error, "the rejected policy reload could not be recorded");
                }
            }
        }
        result
    }

    fn try_reload(
        &self,
        cause: ReloadCause,
        candidate: &mut Option<String>,
    ) -> Result<ReloadOutcome, PolicyError> {
        let bytes = read(&self.file)?;
        let live = self.live.load_full();
        let version = version_of(&bytes);
        if version == live.version() {
            return Ok(ReloadOutcome::Unchanged);
        }
        *candidate = Some(version);
        let policy = compile_checked(&self.file, &bytes, self.tests_dir.as_deref())?;
        let to = policy.version().to_owned();
        if let Some(journal) = self.journal.get() {
            let event = ReloadEvent {
                cause,
                from: live.version().to_owned(),
                result: ReloadResult::Applied { to: to.clone() },
            };
            journal(&event).map_err(|error| {
                PolicyError::single(
                    &self.file.display().to_string(),
                    format!("the reload could not be recorded, so it is not applied: {error}"),
                )
            })?;
        }
        for warning in policy.warnings() {
            tracing::warn!(warning = %warning, "policy warning");
        }
        self.live.store(Arc::new(policy));
        Ok(ReloadOutcome::Applied {
            from: live.version().to_owned(),
            to,
        })
    }
}

fn read(file: &Path) -> Result<Vec<u8>, PolicyError> {
    std::fs::read(file).map_err(|err| {
        PolicyError::single(
            &file.display().to_string(),
            format!("cannot read the policy file: {err}"),
        )
    })
}

/// Reads, compiles and tests a policy file.
fn checked(file: &Path, tests_dir: Option<&Path>) -> Result<Policy, PolicyError> {
    compile_checked(file, &read(file)?, tests_dir)
}

fn compile_checked(
    file: &Path,
    bytes: &[u8],
    tests_dir: Option<&Path>,
) -> Result<Policy, PolicyError> {
    let origin = file.display().to_string();
    let text = std::str::from_utf8(bytes)
        .map_err(|_| PolicyError::single(&origin, "the policy file is not UTF-8"))?;
    let policy = Policy::from_toml(text, &origin)?;
    if let Some(dir) = tests_dir {
        let report = run_policy_tests(&policy, dir)?;
        if !report.passed() {
            return Err(PolicyError {
                problems: report
                    .failures
                    .iter()
                    .map(|failure| Problem {
                        origin: failure.file.clone(),
                        line: None,
                        key: format!("case `{}`", failure.case),
                        message: match &failure.path {
                            Some(path) => {
                                format!("policy test failed: `{path}`: {}", failure.message)
                            }
                            None => format!("policy test failed: {}", failure.message),
                        },
                    })
                    .collect(),
            });
        }
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::telemetry::TestRecorder;

    const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.toml");
    const SHIPPED_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy-tests");

    /// A scratch copy of the shipped policy, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "caf-broker-reload-unit-{}-{name}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(SHIPPED, dir.join("policy.toml")).unwrap();
            Scratch(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("policy.toml")
        }

        fn edit(&self, from: &str, to: &str) {
            let text = std::fs::read_to_string(self.file()).unwrap();
            assert!(text.contains(from));
            std::fs::write(self.file(), text.replacen(from, to, 1)).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn count(recorder: &TestRecorder, result: &str) -> u64 {
        recorder.counter(&format!(
            "caf_broker_policy_reload_total{{result={result}}}"
        ))
    }

    #[test]
    fn a_reload_of_an_unchanged_file_swaps_nothing_and_counts_unchanged() {
        let scratch = Scratch::new("unchanged");
        let store = PolicyStore::load(&scratch.file(), Some(Path::new(SHIPPED_TESTS))).unwrap();
        let before = store.current();
        let recorder = TestRecorder::default();
        let outcome = recorder.record(|| store.reload()).unwrap();
        assert_eq!(outcome, ReloadOutcome::Unchanged);
        assert!(Arc::ptr_eq(&before, &store.current()));
        assert_eq!(count(&recorder, "unchanged"), 1);
    }

    #[test]
    fn a_good_edit_is_applied_and_counted() {
        let scratch = Scratch::new("good");
        let store = PolicyStore::load(&scratch.file(), Some(Path::new(SHIPPED_TESTS))).unwrap();
        let before = store.current();
        scratch.edit("[roles.", "# a comment\n[roles.");
        let recorder = TestRecorder::default();
        let outcome = recorder.record(|| store.reload()).unwrap();
        let after = store.current();
        assert_eq!(
            outcome,
            ReloadOutcome::Applied {
                from: before.version().to_owned(),
                to: after.version().to_owned(),
            }
        );
        assert_ne!(before.version(), after.version());
        assert_eq!(count(&recorder, "applied"), 1);
        assert_eq!(
            recorder.record(|| store.reload()).unwrap(),
            ReloadOutcome::Unchanged
        );
    }

    #[test]
    fn a_bad_edit_is_rejected_counted_and_the_live_policy_kept() {
        let scratch = Scratch::new("bad");
        let store = PolicyStore::load(&scratch.file(), None).unwrap();
        let before = store.current();
        scratch.edit("description = ", "colour = \"blue\"\ndescription = ");
        let recorder = TestRecorder::default();
        let err = recorder.record(|| store.reload()).unwrap_err();
        assert!(err.to_string().contains("colour: unknown key"), "{err}");
        assert!(Arc::ptr_eq(&before, &store.current()));
        assert_eq!(count(&recorder, "rejected"), 1);
        assert_eq!(count(&recorder, "applied"), 0);
        assert_eq!(
            store.counts(),
            ReloadCounts {
                rejected: 1,
                ..ReloadCounts::default()
            }
        );
    }

    #[test]
    fn a_policy_that_fails_its_tests_is_rejected_naming_the_case_and_path() {
        let scratch = Scratch::new("failing");
        let store = PolicyStore::load(&scratch.file(), Some(Path::new(SHIPPED_TESTS))).unwrap();
        let before = store.current();
        scratch.edit(
            "  \"numero_allocataire\",\n",
            "  \"numero_allocataire\",\n  \"allocataire.prenoms\",\n",
        );
        let err = store.reload().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("policy test failed: `allocataire"), "{text}");
        assert!(text.contains("default.toml: case `"), "{text}");
        assert!(Arc::ptr_eq(&before, &store.current()));
    }

    #[test]
    fn loading_fails_when_the_policy_tests_fail_and_passes_without_tests() {
        let scratch = Scratch::new("load");
        scratch.edit(
            "  \"numero_allocataire\",\n",
            "  \"numero_allocataire\",\n  \"allocataire.prenoms\",\n",
        );
        assert!(PolicyStore::load(&scratch.file(), Some(Path::new(SHIPPED_TESTS))).is_err());
        let store = PolicyStore::load(&scratch.file(), None).unwrap();
        assert_eq!(store.tests_dir(), None);
        assert_eq!(store.file(), scratch.file());
    }

    /// Each event the journal is told, with the version live when it was
    /// told.
    type Told = Arc<Mutex<Vec<(ReloadEvent, String)>>>;

    /// A journal that keeps what it is told, and fails while `fails` is set.
    fn journal(store: &Arc<PolicyStore>, fails: Arc<std::sync::atomic::AtomicBool>) -> Told {
        let told = Told::default();
        let kept = told.clone();
        let live = Arc::downgrade(store);
        let journal: ReloadJournal = Box::new(move |event| {
            let live = live.upgrade().unwrap().current().version().to_owned();
            kept.lock().unwrap().push((event.clone(), live));
            match fails.load(Ordering::SeqCst) {
                true => Err("the disk is full".to_owned()),
                false => Ok(()),
            }
        });
        assert!(store.journal_reloads(journal).is_ok());
        told
    }

    #[test]
    fn the_journal_is_told_of_an_applied_reload_before_the_swap_and_of_a_rejected_one() {
        let scratch = Scratch::new("journal");
        let store = Arc::new(PolicyStore::load(&scratch.file(), None).unwrap());
        let fails = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let told = journal(&store, fails.clone());
        let first = store.current().version().to_owned();

        assert_eq!(store.reload().unwrap(), ReloadOutcome::Unchanged);
        assert!(
            told.lock().unwrap().is_empty(),
            "an unchanged reload is not told"
        );

        scratch.edit("[roles.", "# a comment\n[roles.");
        let ReloadOutcome::Applied { to, .. } = store.reload_for(ReloadCause::FileWatch).unwrap()
        else {
            panic!("the edit was not applied");
        };
        let (event, live) = told.lock().unwrap()[0].clone();
        assert_eq!(
            event,
            ReloadEvent {
                cause: ReloadCause::FileWatch,
                from: first.clone(),
                result: ReloadResult::Applied { to: to.clone() },
            }
        );
        assert_eq!(live, first, "told before the new policy was swapped in");

        scratch.edit("description = ", "colour = \"blue\"\ndescription = ");
        let candidate = version_of(&std::fs::read(scratch.file()).unwrap());
        assert!(store.reload().is_err());
        let event = told.lock().unwrap()[1].0.clone();
        assert_eq!(
            event,
            ReloadEvent {
                cause: ReloadCause::Signal,
                from: to,
                result: ReloadResult::Rejected {
                    candidate: Some(candidate),
                    problems: 1,
                },
            }
        );
    }

    #[test]
    fn a_reload_the_journal_cannot_record_is_rejected_and_the_live_policy_kept() {
        let scratch = Scratch::new("journal-fails");
        let store = Arc::new(PolicyStore::load(&scratch.file(), None).unwrap());
        let fails = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let told = journal(&store, fails.clone());
        let before = store.current();
        scratch.edit("[roles.", "# a comment\n[roles.");
        let err = store.reload().unwrap_err();
        assert!(
            err.to_string()
                .contains("could not be recorded, so it is not applied"),
            "{err}"
        );
        assert!(Arc::ptr_eq(&before, &store.current()));
        assert_eq!(store.counts().rejected, 1);
        // Told of the applied reload (refused), then of its rejection.
        let results: Vec<bool> = told
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| matches!(e.result, ReloadResult::Applied { .. }))
            .collect();
        assert_eq!(results, [true, false]);
        // Once the journal writes again, the same file goes through.
        fails.store(false, Ordering::SeqCst);
        assert!(matches!(store.reload(), Ok(ReloadOutcome::Applied { .. })));
        assert_ne!(store.current().version(), before.version());
    }

    #[test]
    fn a_missing_file_is_rejected_and_the_live_policy_kept() {
        let scratch = Scratch::new("missing");
        let store = PolicyStore::load(&scratch.file(), None).unwrap();
        let version = store.current().version().to_owned();
        std::fs::remove_file(scratch.file()).unwrap();
        let err = store.reload().unwrap_err();
        assert!(
            err.to_string().contains("cannot read the policy file"),
            "{err}"
        );
        assert_eq!(store.current().version(), version);
    }
}
