//! Audit file names (`audit-YYYY-MM-DD[.N].jsonl`, day in UTC), their chain order, and reading a file's tail.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// The mode of every file the broker creates in an audit directory: the
/// owner alone reads the log (who looked at whose dossier).
pub(super) const FILE_MODE: u32 = 0o600;

/// The mode of the audit directories the broker creates.
pub(super) const DIR_MODE: u32 = 0o700;

/// Creates (or truncates) `path` with [`FILE_MODE`].
pub(super) fn create_owner_only(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `dir` and its missing parents with [`DIR_MODE`]; an existing
/// directory keeps its mode (`verify` warns when it is looser).
pub(super) fn create_dir_owner_only(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// The longest line read back from a file; a real record is a few kilobytes.
pub(super) const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// The place of a file in the chain: its UTC day, then its index within the day
/// (0 for `audit-YYYY-MM-DD.jsonl`, N for `audit-YYYY-MM-DD.N.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName {
    pub day: Date,
    pub index: u32,
}

impl FileName {
    pub fn first_of(day: Date) -> FileName {
        FileName { day, index: 0 }
    }

    /// The next file of the same day.
    pub fn next(self) -> FileName {
        FileName {
            day: self.day,
            index: self.index.saturating_add(1),
        }
    }

    /// Reads a file name written by [`FileName::file_name`], and nothing else.
    pub fn parse(name: &str) -> Option<FileName> {
        let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
        let (day, index) = match rest.split_once('.') {
            None => (rest, 0),
            Some((day, index)) => {
                let canonical =
                    !index.starts_with('0') && index.bytes().all(|b| b.is_ascii_digit());
                (day, index.parse().ok().filter(|_| canonical)?)
            }
        };
        let day: Date = day.parse().ok()?;
        let parsed = FileName { day, index };
        (parsed.file_name() == name).then_some(parsed)
    }

    pub fn file_name(&self) -> String {
        if self.index == 0 {
            format!("audit-{}.jsonl", self.day)
        } else {
            format!("audit-{}.{}.jsonl", self.day, self.index)
        }
    }
}

/// The audit files of `dir` in chain order; other entries (the checkpoint, the
/// lock, anything else) are left out.
pub(super) fn list(dir: &Path) -> io::Result<Vec<(FileName, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(FileName::parse) else {
            continue;
        };
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a file can be created in the existing directory `dir`, as the
/// writer creates the lock and the audit files: by creating a uniquely named
/// empty file there and removing it. Permission bits alone would not tell (a
/// read-only mount, an ACL, another user).
pub(super) fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(
        ".check-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Whether the missing directory `dir` can be created, as the writer creates
/// it: by creating it, and its missing parents, and removing them again.
pub(super) fn probe_creatable(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    let created = std::fs::create_dir_all(dir);
    // Deepest first; a directory someone else filled meanwhile stays.
    for path in &missing {
        if std::fs::remove_dir(path).is_err() {
            break;
        }
    }
    created
}

/// The end of a file: its last complete line, and what follows the last newline.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Length up to and including the last newline.
    pub complete_len: u64,
    /// The last newline-terminated line, without its newline (`None` if there is
    /// none, or if it is longer than [`MAX_LINE_BYTES`]).
    pub last_line: Option<Vec<u8>>,
    /// Bytes after the last newline: a line cut short, or a record that lacks
    /// only its newline. `None` if longer than [`MAX_LINE_BYTES`].
    pub partial: Option<Vec<u8>>,
    pub partial_len: u64,
}

/// Reads the end of a file without reading all of it.
pub(super) fn read_tail(path: &Path) -> io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let Some(last_newline) = rfind_newline(&mut file, len)? else {
        return Ok(Tail {
            complete_len: 0,
            last_line: None,
            partial: read_range(&mut file, 0, len)?,
            partial_len: len,
        });
    };
    let complete_len = last_newline + 1;
    let line_start = rfind_newline(&mut file, last_newline)?.map_or(0, |p| p + 1);
    Ok(Tail {
        complete_len,
        last_line: read_range(&mut file, line_start, last_newline)?,
        partial: read_range(&mut file, complete_len, len)?,
        partial_len: len - complete_len,
    })
}

/// The position of the last `\n` before `end`.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 8192;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = end;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = buf.get_mut(..(end - start) as usize).unwrap_or_default();
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

fn read_range(file: &mut File, start: u64, end: u64) -> io::Result<Option<Vec<u8>>> {
    if end.saturating_sub(start) > MAX_LINE_BYTES {
        return Ok(None);
    }
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Makes the creation, removal or renaming of files in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A system time as a timestamp (the epoch if it cannot be represented).
/// The UTC day of a timestamp: the day in an audit file's name.
pub(super) fn utc_day(time: Timestamp) -> Date {
    time.to_zoned(TimeZone::UTC).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_chain_order() {
        let day: Date = "2026-11-26".parse().unwrap();
        let names = [
            FileName::first_of(day),
            FileName::first_of(day).next(),
            FileName { day, index: 10 },
            FileName::first_of("2026-11-27".parse().unwrap()),
        ];
        for name in names {
            assert_eq!(FileName::parse(&name.file_name()), Some(name));
        }
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(names[1].file_name(), "audit-2026-11-26.1.jsonl");
    }

    #[test]
    fn other_names_are_not_audit_files() {
        for name in [
            "checkpoint.json",
            "audit-2026-11-26.json",
            "audit-2026-11-26.01.jsonl",
            "audit-2026-11-26.0.jsonl",
            "audit-2026-13-01.jsonl",
            "audit-2026-1-01.jsonl",
            "audit-2026-11-26.x.jsonl",
        ] {
            assert_eq!(FileName::parse(name), None, "{name}");
        }
    }

    #[test]
    fn the_tail_separates_the_last_line_from_a_torn_one() {
        let dir = std::env::temp_dir().join(format!("caf-audit-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let long = "x".repeat(10_000);
        std::fs::write(&path, format!("a\n{long}\ntorn")).unwrap();
        let tail = read_tail(&path).unwrap();
        assert_eq!(tail.last_line.as_deref(), Some(long.as_bytes()));
        assert_eq!(tail.partial.as_deref(), Some(&b"torn"[..]));
        assert_eq!(tail.complete_len, 2 + 10_001);
        std::fs::write(&path, "").unwrap();
        let tail = read_tail(&path).unwrap();
        assert_eq!((tail.last_line, tail.partial_len), (None, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
