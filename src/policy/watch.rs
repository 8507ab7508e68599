//! Following the policy file: a background thread reloads the store when the file or its tests change.
//!
//! The watching itself (directory watch, debounce, a file briefly absent) is
//! the kernel's [`crate::file_watch`]; the tests directory is watched with the
//! file: fixing a test that made a new policy fail lets that policy through
//! without touching the policy file again. The reload
//! ([`PolicyStore::reload`]) logs and counts its outcome.

use std::sync::Arc;

use crate::file_watch::{self, WatchGuard};

use super::{PolicyError, PolicyStore, ReloadCause};

impl PolicyStore {
    /// Watches the policy file (through its directory) and its tests directory,
    /// reloading on change from a background thread. The thread holds only a
    /// weak reference: it ends when the guard or the store is dropped.
    pub fn watch(self: &Arc<Self>) -> Result<WatchGuard, PolicyError> {
        let origin = self.file().display().to_string();
        let store = Arc::downgrade(self);
        let guard = file_watch::watch(
            self.file(),
            self.tests_dir(),
            "the policy file",
            move || {
                let Some(store) = store.upgrade() else {
                    return false;
                };
                // The outcome is logged and counted by reload itself.
                let _ = store.reload_for(ReloadCause::FileWatch);
                true
            },
        )
        .map_err(|error| PolicyError::single(&origin, error.to_string()))?;
        tracing::info!(file = %origin, "watching the policy file for changes");
        Ok(guard)
    }
}
