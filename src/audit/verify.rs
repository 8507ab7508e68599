//! Verifying the hash chain over the files, and naming the first bad record.
//!
//! Every line must parse as a record, match its own hash, be in canonical
//! form, carry the next `seq` and link to the previous record's `hash`. A
//! directory is verified from the first record ever (`seq` 1, `prev` all
//! zeros) or, after retention, from `checkpoint.json`. A list of files is a
//! slice of the chain: it is verified from its first record, whose `prev` is
//! taken on trust unless its `seq` is 1.
//!
//! Deleting the newest records (or the newest files) leaves a shorter chain
//! that is still sound: only an anchor kept elsewhere (the `seq` and `hash`
//! this reports, copied to another system) reveals it.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::chain::{self, GENESIS, Integrity};
use super::files::{self, FileName};
use super::retention::{self, Checkpoint};
use super::signing::{CHECKPOINTS_FILE, CheckpointVerifier, NoteDefect, split_log};
use super::tree::{Edge, Hash, leaf_hash};

/// A sound chain: how much was checked, and its end, to anchor elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub files: usize,
    /// Where the chain was verified from.
    pub start: ChainStart,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// Oddities that do not break the chain (e.g. a final record lacking only its newline).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStart {
    /// From the first record ever.
    Genesis,
    /// From the last record removed by retention.
    Checkpoint { seq: u64, hash: String },
    /// From the first record of the files given, taken on trust.
    Slice,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} records checked in {} files",
            self.records, self.files
        )?;
        match &self.start {
            ChainStart::Genesis => write!(f, ", from the first record")?,
            ChainStart::Checkpoint { seq, .. } => {
                write!(f, ", from the retention checkpoint after seq {seq}")?;
            }
            ChainStart::Slice => write!(f, ", as a slice of the chain")?,
        }
        if let (Some(seq), Some(hash)) = (self.last_seq, &self.last_hash) {
            write!(f, "; last seq {seq}, hash {hash}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken: the first bad record.
    #[error("first bad record: {0}")]
    Bad(Box<BadRecord>),
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: not an audit file (expected a name like audit-YYYY-MM-DD.jsonl or audit-YYYY-MM-DD.N.jsonl)"
    )]
    NotAuditFile { path: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] retention::CheckpointError),
    /// The records do not match the signed checkpoints (see [`verify_signed`]).
    #[error("{0}")]
    Tree(TreeDefect),
}

/// How the records and the signed checkpoints disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeDefect {
    #[error("{source_name}: checkpoint {index}: {defect}")]
    BadCheckpoint {
        source_name: String,
        index: usize,
        defect: NoteDefect,
    },
    #[error(
        "the retention checkpoint (checkpoint.json) is not signed by the given key for its tree edge: it was forged or altered, and the records it stands for cannot be vouched for"
    )]
    RetentionForged,
    #[error(
        "records were deleted and the chain recomputed: the tree differs from the signed checkpoint of size {size}, and the log holds {records} records where a signed checkpoint covers {latest}"
    )]
    Deleted {
        size: u64,
        records: u64,
        latest: u64,
    },
    #[error(
        "a record was edited or moved and the chain recomputed: the tree's root at size {size} differs from the signed checkpoint of that size"
    )]
    Rewritten { size: u64 },
    #[error(
        "the log was truncated: it ends after {records} records but a signed checkpoint covers {latest}; the newest records or files were removed"
    )]
    Truncated { records: u64, latest: u64 },
}

/// A log whose records match their signed checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeReport {
    /// The hash chain's report.
    pub chain: VerifyReport,
    /// The tree's size (records ever written) and root.
    pub tree_size: u64,
    pub root: Hash,
    /// The latest signed checkpoint checked: its size (`None` before the first).
    pub checkpoint_size: Option<u64>,
    pub checkpoints_checked: usize,
    /// The origin the log's checkpoints name.
    pub origin: String,
}

impl fmt::Display for TreeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.chain)?;
        write!(
            f,
            "tree size {}, root {} (hex {})",
            self.tree_size,
            STANDARD.encode(self.root.0),
            hex::encode(self.root.0)
        )?;
        match self.checkpoint_size {
            Some(size) => write!(
                f,
                "; {} signed checkpoints of {} match, the latest at size {size}",
                self.checkpoints_checked, self.origin
            ),
            None => write!(f, "; no signed checkpoint yet"),
        }
    }
}

/// Verifies `dir` as [`verify_dir`] does, then the Merkle tree over its
/// records against every signed checkpoint of `checkpoints.log`, the signed
/// retention checkpoint and, if given, `checkpoint` (a note kept elsewhere,
/// e.g. by a witness), all with `verifier` only. Each checkpoint must be of
/// the verifier's origin and signed by its key; the tree at each checkpoint's
/// size must have its root; the log must hold at least as many records as
/// the largest.
pub fn verify_signed(
    dir: &Path,
    verifier: &CheckpointVerifier,
    checkpoint: Option<&[u8]>,
) -> Result<TreeReport, VerifyError> {
    let retained = retention::read_checkpoint(dir)?;
    let path = dir.join(CHECKPOINTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(VerifyError::Io { path, source }),
    };
    let (notes, _) = split_log(&bytes);
    // The log's own origin, a replica's under the verifier's, is taken from
    // its first checkpoint; every other checkpoint must name the same.
    let first = retained
        .as_ref()
        .and_then(|cut| cut.note.as_deref().map(str::as_bytes))
        .or(notes.first().copied())
        .or(checkpoint);
    let verifier = &match first {
        Some(note) => verifier.for_log_of(note),
        None => verifier.clone(),
    };
    let start_edge = match &retained {
        None => Edge::empty(),
        Some(cut) => {
            let edge = cut
                .tree_edge()
                .ok_or(VerifyError::Tree(TreeDefect::RetentionForged))?;
            let signed = cut
                .note
                .as_deref()
                .map(|note| verifier.verify(note.as_bytes()));
            match signed {
                Some(Ok(c)) if c.size == edge.size() && c.root == edge.root() => edge,
                _ => return Err(VerifyError::Tree(TreeDefect::RetentionForged)),
            }
        }
    };
    let mut signed = Vec::with_capacity(notes.len() + 1);
    for (index, note) in notes.iter().enumerate() {
        let checkpoint = verifier.verify(note).map_err(|defect| {
            VerifyError::Tree(TreeDefect::BadCheckpoint {
                source_name: CHECKPOINTS_FILE.to_owned(),
                index: index + 1,
                defect,
            })
        })?;
        signed.push(checkpoint);
    }
    let given = match checkpoint {
        Some(note) => Some(verifier.verify(note).map_err(|defect| {
            VerifyError::Tree(TreeDefect::BadCheckpoint {
                source_name: "the checkpoint given".to_owned(),
                index: 1,
                defect,
            })
        })?),
        None => None,
    };
    signed.extend(given.clone());

    let listed = files::list(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let start = match &retained {
        Some(Checkpoint { seq, hash, .. }) => ChainStart::Checkpoint {
            seq: *seq,
            hash: hash.clone(),
        },
        None => ChainStart::Genesis,
    };
    let paths: Vec<PathBuf> = listed.into_iter().map(|(_, path)| path).collect();
    let mut walk = Walk::new(start);
    let cut = start_edge.size();
    walk.roots = signed
        .iter()
        .filter(|c| c.size >= cut)
        .map(|c| (c.size, None))
        .collect();
    if let Some(slot) = walk.roots.get_mut(&cut) {
        *slot = Some(start_edge.root());
    }
    walk.edge = Some(start_edge);
    let (chain, edge, roots) = walk.run_tree(&paths)?;

    let latest = given
        .as_ref()
        .map(|c| c.size)
        .or_else(|| signed.iter().map(|c| c.size).max());
    let records = edge.size();
    let mut by_size: Vec<_> = signed.iter().filter(|c| c.size >= cut).collect();
    by_size.sort_by_key(|c| c.size);
    for checkpoint in by_size {
        match roots.get(&checkpoint.size).copied().flatten() {
            Some(root) if root == checkpoint.root => {}
            Some(_) => {
                let latest = latest.unwrap_or(checkpoint.size);
                return Err(VerifyError::Tree(if records < latest {
                    TreeDefect::Deleted {
                        size: checkpoint.size,
                        records,
                        latest,
                    }
                } else {
                    TreeDefect::Rewritten {
                        size: checkpoint.size,
                    }
                }));
            }
            None => {
                return Err(VerifyError::Tree(TreeDefect::Truncated {
                    records,
                    latest: latest.unwrap_or(checkpoint.size).max(checkpoint.size),
                }));
            }
        }
    }
    Ok(TreeReport {
        chain,
        tree_size: records,
        root: edge.root(),
        checkpoint_size: latest,
        checkpoints_checked: signed.len(),
        origin: verifier.origin().to_owned(),
    })
}

/// The first record that breaks the chain, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    /// The record's `seq`, when the line could be read.
    pub seq: Option<u64>,
    pub defect: Defect,
    /// Records verified sound before this one.
    pub checked: u64,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.defect)
    }
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// Not a readable record (the reason never quotes the line).
    Unreadable { reason: String },
    /// The content does not match the record's hash.
    Edited,
    /// The content matches its hash but the line is not in canonical form.
    Reformatted,
    /// `prev` is not the previous record's hash: the previous record was
    /// replaced (its hash recomputed), or the chain does not start where it should.
    BrokenLink { expected_prev: String },
    /// Records `expected..found` are missing.
    Missing { expected: u64, found: u64 },
    /// The expected record comes later: records were moved.
    Reordered {
        expected: u64,
        found: u64,
        expected_at: (PathBuf, u64),
    },
    /// A record that was already seen, or comes too early.
    Duplicated { expected: u64, found: u64 },
    /// The file ends in the middle of a record.
    Truncated,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Unreadable { reason } => {
                write!(
                    f,
                    "not a readable audit record ({reason}): edited or corrupted"
                )
            }
            Defect::Edited => write!(f, "its content does not match its hash: it was edited"),
            Defect::Reformatted => write!(
                f,
                "its content matches its hash but not its canonical form: the line was rewritten"
            ),
            Defect::BrokenLink { expected_prev } => write!(
                f,
                "prev does not match the previous record's hash ({expected_prev}): the previous record was replaced, or the chain's start was altered"
            ),
            Defect::Missing { expected, found } if found.saturating_sub(*expected) == 1 => {
                write!(f, "expected seq {expected}: record {expected} was deleted")
            }
            Defect::Missing { expected, found } => write!(
                f,
                "expected seq {expected}: records {expected} to {} were deleted",
                found.saturating_sub(1)
            ),
            Defect::Reordered {
                expected,
                expected_at: (file, line),
                ..
            } => write!(
                f,
                "expected seq {expected}, which comes later ({} line {line}): records were reordered",
                file.display()
            ),
            Defect::Duplicated { expected, found } => write!(
                f,
                "expected seq {expected} but found {found} again: a record was duplicated or moved back"
            ),
            Defect::Truncated => write!(
                f,
                "the file ends in the middle of a record: it was truncated (a torn write from a crash is removed when the broker next starts)"
            ),
        }
    }
}

/// Verifies every audit file of `dir`, from the genesis or the retention checkpoint.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, VerifyError> {
    let listed = files::list(dir).map_err(|source| VerifyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let checkpoint = retention::read_checkpoint(dir)?;
    let start = match &checkpoint {
        Some(Checkpoint { seq, hash, .. }) => ChainStart::Checkpoint {
            seq: *seq,
            hash: hash.clone(),
        },
        None => ChainStart::Genesis,
    };
    let paths: Vec<PathBuf> = listed.into_iter().map(|(_, path)| path).collect();
    Walk::new(start).run(&paths)
}

/// Verifies the given audit files as one slice of the chain, in chain order
/// (by name), whatever the order given.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    let mut named = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(FileName::parse)
            .ok_or_else(|| VerifyError::NotAuditFile { path: path.clone() })?;
        named.push((name, path.clone()));
    }
    named.sort();
    let paths: Vec<PathBuf> = named.into_iter().map(|(_, path)| path).collect();
    Walk::new(ChainStart::Slice).run(&paths)
}

/// The state of a walk along the chain.
struct Walk {
    start: ChainStart,
    /// The next record's `seq` and `prev`; `None` until a slice's first record.
    expected: Option<(u64, String)>,
    /// Records at or before the checkpoint that retention has not removed yet.
    retired_through: Option<u64>,
    retired_seen: u64,
    records: u64,
    /// The last sound record's `seq` and `hash`.
    last: Option<(u64, String)>,
    warnings: Vec<String>,
    /// The Merkle tree over the sound records, when the tree is checked.
    edge: Option<Edge>,
    /// The roots wanted, by tree size, filled in as the walk reaches them.
    roots: Roots,
}

/// Tree roots wanted by size: `None` until the walk reaches that size.
type Roots = BTreeMap<u64, Option<Hash>>;

impl Walk {
    fn new(start: ChainStart) -> Walk {
        let (expected, retired_through) = match &start {
            ChainStart::Genesis => (Some((1, GENESIS.to_owned())), None),
            ChainStart::Checkpoint { seq, hash } => {
                (Some((seq.saturating_add(1), hash.clone())), Some(*seq))
            }
            ChainStart::Slice => (None, None),
        };
        Walk {
            start,
            expected,
            retired_through,
            retired_seen: 0,
            records: 0,
            last: None,
            warnings: Vec::new(),
            edge: None,
            roots: BTreeMap::new(),
        }
    }

    /// [`Walk::run`], also returning the tree and the roots wanted.
    fn run_tree(mut self, paths: &[PathBuf]) -> Result<(VerifyReport, Edge, Roots), VerifyError> {
        let edge = self.edge.take().unwrap_or_default();
        let mut tree = (edge, std::mem::take(&mut self.roots));
        let report = self.walk(paths, Some(&mut tree))?;
        Ok((report, tree.0, tree.1))
    }

    fn run(self, paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
        self.walk(paths, None)
    }

    fn walk(
        mut self,
        paths: &[PathBuf],
        mut tree: Option<&mut (Edge, Roots)>,
    ) -> Result<VerifyReport, VerifyError> {
        for (index, path) in paths.iter().enumerate() {
            let mut reader = open(path)?;
            let mut line = Vec::new();
            let mut number = 0u64;
            loop {
                line.clear();
                let read =
                    reader
                        .read_until(b'\n', &mut line)
                        .map_err(|source| VerifyError::Io {
                            path: path.clone(),
                            source,
                        })?;
                if read == 0 {
                    break;
                }
                number += 1;
                let complete = line.last() == Some(&b'\n');
                if complete {
                    line.pop();
                }
                let checked = self.records;
                let bad = |seq, defect| BadRecord {
                    file: path.clone(),
                    line: number,
                    seq,
                    defect,
                    checked,
                };
                let record = match chain::parse(&line) {
                    Ok(record) => record,
                    Err(_) if !complete => return Err(bad(None, Defect::Truncated).into()),
                    Err(reason) => return Err(bad(None, Defect::Unreadable { reason }).into()),
                };
                let seq = Some(record.seq);
                if self.retired_through.is_some_and(|r| record.seq <= r) {
                    self.retired_seen += 1;
                    continue;
                }
                self.retired_through = None;
                match chain::check(&record, &line) {
                    Integrity::Sound => {}
                    Integrity::HashMismatch => return Err(bad(seq, Defect::Edited).into()),
                    Integrity::NotCanonical => return Err(bad(seq, Defect::Reformatted).into()),
                }
                let (expected_seq, expected_prev) = match self.expected.take() {
                    Some(expected) => expected,
                    // A slice starts where its first record says, but the first
                    // record ever must start from the genesis.
                    None if record.seq == 1 => (1, GENESIS.to_owned()),
                    None => (record.seq, record.prev.clone()),
                };
                if record.seq > expected_seq {
                    let rest = paths.get(index + 1..).unwrap_or_default();
                    let later = find_seq(&mut reader, path, number, rest, expected_seq)?;
                    let defect = match later {
                        Some(expected_at) => Defect::Reordered {
                            expected: expected_seq,
                            found: record.seq,
                            expected_at,
                        },
                        None => Defect::Missing {
                            expected: expected_seq,
                            found: record.seq,
                        },
                    };
                    return Err(bad(seq, defect).into());
                }
                if record.seq < expected_seq {
                    let defect = Defect::Duplicated {
                        expected: expected_seq,
                        found: record.seq,
                    };
                    return Err(bad(seq, defect).into());
                }
                if record.prev != expected_prev {
                    let defect = Defect::BrokenLink { expected_prev };
                    return Err(bad(seq, defect).into());
                }
                if !complete {
                    self.warnings.push(format!(
                        "{} line {number}: the last record lacks its final newline (a torn write; the broker completes it when it next starts)",
                        path.display()
                    ));
                }
                if let Some((edge, roots)) = tree.as_deref_mut() {
                    // The chain checks above make `seq` the next leaf's index + 1.
                    edge.push(leaf_hash(&line));
                    if let Some(slot) = roots.get_mut(&edge.size()) {
                        *slot = Some(edge.root());
                    }
                }
                self.records += 1;
                self.expected = Some((record.seq.saturating_add(1), record.hash.clone()));
                self.last = Some((record.seq, record.hash));
            }
        }
        if self.retired_seen > 0 {
            self.warnings.push(format!(
                "{} records at or before the retention checkpoint are still present (retention was interrupted; the broker removes them)",
                self.retired_seen
            ));
        }
        let (last_seq, last_hash) = self.last.unzip();
        Ok(VerifyReport {
            records: self.records,
            files: paths.len(),
            start: self.start,
            last_seq,
            last_hash,
            warnings: self.warnings,
        })
    }
}

impl From<BadRecord> for VerifyError {
    fn from(bad: BadRecord) -> VerifyError {
        VerifyError::Bad(Box::new(bad))
    }
}

fn open(path: &Path) -> Result<BufReader<File>, VerifyError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| VerifyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Where record `seq` appears after the current line, if anywhere: tells a
/// reorder from a deletion.
fn find_seq(
    reader: &mut BufReader<File>,
    path: &Path,
    current_line: u64,
    later: &[PathBuf],
    seq: u64,
) -> Result<Option<(PathBuf, u64)>, VerifyError> {
    if let Some(found) = scan(reader, seq)? {
        return Ok(Some((path.to_path_buf(), current_line + found)));
    }
    for path in later {
        if let Some(found) = scan(&mut open(path)?, seq)? {
            return Ok(Some((path.clone(), found)));
        }
    }
    Ok(None)
}

/// The 1-based line, from the reader's position, of the record with `seq`.
fn scan(reader: &mut BufReader<File>, seq: u64) -> Result<Option<u64>, VerifyError> {
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => number += 1,
        }
        if let Ok(record) = chain::parse(line.strip_suffix(b"\n").unwrap_or(&line))
            && record.seq == seq
        {
            return Ok(Some(number));
        }
    }
}
