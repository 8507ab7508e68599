//! Several brokers, one audit directory: each replica's log in its own subdirectory, found again to be read.
//!
//! A broker writes `audit.dir/<audit.replica_id>/` (the id defaults to the
//! host name), so replicas sharing a volume never share a file, a lock or a
//! chain. Readers (`verify`, `search`, `report`) take one or more
//! directories; each holds logs in either layout:
//!
//! - audit files directly in it: one log (written before replicas, or one
//!   replica's directory named directly), read as it is;
//! - subdirectories holding audit files: one log per replica, named by the
//!   subdirectory.
//!
//! A broker never writes a log whose files lie directly in `audit.dir` while
//! it has a replica id: it refuses to start ([`AuditSetupError::SingleLog`])
//! until they are moved into `audit.dir/<replica id>/`, where its chain
//! continues. Readers still read such a log in place.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::files;
use super::retention::CHECKPOINT_FILE;
use super::{AuditSettings, AuditSetupError};

/// One replica's log: its directory, and its name when it is a
/// subdirectory of the directory given (`None`: the directory itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    pub replica: Option<String>,
    pub path: PathBuf,
}

impl LogDir {
    /// How the log is named in messages: `replica <id>`, or its path.
    pub fn label(&self) -> String {
        match &self.replica {
            Some(id) => format!("replica {id}"),
            None => self.path.display().to_string(),
        }
    }
}

/// The logs under `dir`: `dir` itself when it holds a log, then each
/// subdirectory that does, by name. Empty when there is none.
pub fn logs_under(dir: &Path) -> io::Result<Vec<LogDir>> {
    let mut logs = Vec::new();
    if holds_log(dir)? {
        logs.push(LogDir {
            replica: None,
            path: dir.to_path_buf(),
        });
    }
    let mut replicas = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if holds_log(&path)? {
            replicas.push(LogDir {
                replica: Some(name),
                path,
            });
        }
    }
    replicas.sort_by(|a, b| a.replica.cmp(&b.replica));
    logs.extend(replicas);
    Ok(logs)
}

/// Whether `dir` holds audit files or a retention checkpoint directly.
fn holds_log(dir: &Path) -> io::Result<bool> {
    Ok(!files::list(dir)?.is_empty() || dir.join(CHECKPOINT_FILE).is_file())
}

/// What in `dir` (the directory and the files directly in it) others than
/// its owner may read, write or enter: one sentence each. The broker creates
/// directories `0700` and files `0600`.
pub fn loose_modes(dir: &Path) -> io::Result<Vec<String>> {
    let mut loose = Vec::new();
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        loose.push(format!(
            "{}: directory mode {mode:04o} lets others in; the broker creates audit directories {:04o} (chmod {:o})",
            dir.display(),
            files::DIR_MODE,
            files::DIR_MODE
        ));
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            loose.push(format!(
                "{}: file mode {mode:04o} lets others read or write it; the broker creates audit files {:04o} (chmod {:o})",
                path.display(),
                files::FILE_MODE,
                files::FILE_MODE
            ));
        }
    }
    Ok(loose)
}

/// The settings the writer opens: `dir` made this replica's directory.
/// Refuses a log lying directly in `audit.dir` when a replica id is set.
/// Creates nothing.
pub(super) fn writer_settings(settings: &AuditSettings) -> Result<AuditSettings, AuditSetupError> {
    if settings.replica_id.is_some() {
        refuse_single_log(settings)?;
    }
    let mut local = settings.clone();
    local.dir = settings.log_dir();
    local.replica_id = None;
    Ok(local)
}

/// [`AuditSetupError::SingleLog`] when audit files lie directly in `audit.dir`.
fn refuse_single_log(settings: &AuditSettings) -> Result<(), AuditSetupError> {
    // A missing or unreadable directory is reported where it is used.
    let found = holds_log(&settings.dir).unwrap_or_default();
    match (&settings.replica_id, found) {
        (Some(replica), true) => Err(AuditSetupError::SingleLog {
            path: settings.dir.clone(),
            replica: replica.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("caf-audit-replicas-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_directory_holds_its_own_log_and_one_per_replica_subdirectory() {
        let dir = scratch("layout");
        std::fs::write(dir.join("audit-2026-01-01.jsonl"), "").unwrap();
        for replica in ["b", "a", "empty"] {
            std::fs::create_dir_all(dir.join(replica)).unwrap();
        }
        std::fs::write(dir.join("a/audit-2026-01-02.jsonl"), "").unwrap();
        std::fs::write(dir.join("b").join(CHECKPOINT_FILE), "{}").unwrap();
        let logs = logs_under(&dir).unwrap();
        let names: Vec<_> = logs.iter().map(|l| l.replica.as_deref()).collect();
        assert_eq!(names, [None, Some("a"), Some("b")]);
        assert_eq!(logs[1].path, dir.join("a"));
        assert_eq!(logs_under(&dir.join("empty")).unwrap(), []);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_replica_refuses_a_log_lying_directly_in_the_audit_directory() {
        let dir = scratch("single");
        let mut settings = AuditSettings::new(&dir, "k");
        settings.replica_id = Some("paris-1".into());
        assert_eq!(writer_settings(&settings).unwrap().dir, dir.join("paris-1"));
        std::fs::write(dir.join("audit-2026-01-01.jsonl"), "").unwrap();
        let err = writer_settings(&settings).unwrap_err().to_string();
        assert!(err.contains("paris-1") && err.contains("move"), "{err}");
        settings.replica_id = None;
        assert_eq!(writer_settings(&settings).unwrap().dir, dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modes_looser_than_the_brokers_are_named() {
        let dir = scratch("modes");
        let file = dir.join("audit-2026-01-01.jsonl");
        std::fs::write(&file, "").unwrap();
        let set = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(&dir, 0o700);
        set(&file, 0o600);
        assert_eq!(loose_modes(&dir).unwrap(), Vec::<String>::new());
        set(&file, 0o644);
        set(&dir, 0o755);
        let loose = loose_modes(&dir).unwrap();
        assert_eq!(loose.len(), 2, "{loose:?}");
        assert!(
            loose[0].contains("0755") && loose[1].contains("0644"),
            "{loose:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
