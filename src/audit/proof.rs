//! Inclusion and consistency proofs over one log's Merkle tree: what `audit prove`, `audit verify-proof` and `audit consistency` compute and check.
//!
//! An [`InclusionProof`] is a self-contained JSON document: the record's
//! stored line (its leaf is `SHA-256(0x00 || line)`), its leaf index
//! (`seq - 1`), the audit path, and the signed checkpoint note whose root the
//! path leads to. [`check_inclusion_proof`] needs nothing else but the
//! checkpoint key's public half. A consistency proof is computed from the
//! records (what a witness asks the log for) and checked against two signed
//! checkpoints with [`prove_consistency`].
//!
//! The tree is rebuilt from the records on each call (about a million leaves
//! a second): these are offline commands. A log cut by retention keeps only
//! its tree's edge at the cut, not the hashes inside it, so it cannot be
//! proven here.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::chain;
use super::files;
use super::report::ProvenCheckpoint;
use super::retention;
use super::signing::{CHECKPOINTS_FILE, CheckpointVerifier, NoteDefect, split_log};
use super::tree::{self, Hash, Tree, leaf_hash};

/// The version of the proof document, in its `format` field.
pub const PROOF_FORMAT: &str = "caf-broker-inclusion-proof/1";

/// One record, and the proof that it is a leaf of a signed checkpoint's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// [`PROOF_FORMAT`].
    pub format: String,
    /// The replica whose log holds the record (`null`: the directory given).
    pub replica: Option<String>,
    /// The record's index in the tree: its `seq` - 1.
    pub leaf_index: u64,
    /// The record's stored line, byte for byte, without its newline.
    pub record: String,
    /// The size of the tree the path leads up, as the checkpoint signs it.
    pub tree_size: u64,
    /// The audit path (RFC 9162 inclusion proof), base64 hashes, leaf side first.
    pub inclusion_path: Vec<String>,
    /// The signed checkpoint note (C2SP tlog-checkpoint in a signed note).
    pub checkpoint: String,
}

/// Why a log cannot be proven.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{dir}: the log was cut by retention; proofs need every record from the first, run them on an archived copy"
    )]
    Retained { dir: PathBuf },
    #[error("{dir}: no signed checkpoint in {CHECKPOINTS_FILE}")]
    NoCheckpoint { dir: PathBuf },
    #[error("{dir}: its latest checkpoint is not a checkpoint note")]
    Malformed { dir: PathBuf },
    #[error(
        "{dir}: the log no longer matches its latest signed checkpoint (size {size}); run `caf-broker audit verify --public-key`"
    )]
    Mismatch { dir: PathBuf, size: u64 },
    #[error(
        "{dir}: seq {seq} was written after the latest signed checkpoint (size {size}); it is proven once the next one is signed"
    )]
    Uncovered { dir: PathBuf, seq: u64, size: u64 },
}

/// One log's tree, rebuilt from its records, and each record's line.
pub struct LogTree {
    pub tree: Tree,
    lines: Vec<Vec<u8>>,
}

impl LogTree {
    /// Reads every record of the log in `dir`, in order.
    pub fn read(dir: &Path) -> Result<LogTree, ProveError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProveError::Io { path, source }
        };
        if retention::read_checkpoint(dir)
            .ok()
            .flatten()
            .is_some_and(|cut| cut.seq > 0)
        {
            return Err(ProveError::Retained {
                dir: dir.to_path_buf(),
            });
        }
        let mut tree = Tree::default();
        let mut lines = Vec::new();
        for (_, path) in files::list(dir).map_err(io(dir))? {
            let mut reader = BufReader::new(File::open(&path).map_err(io(&path))?);
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).map_err(io(&path))? == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                tree.push(leaf_hash(&line));
                lines.push(line);
            }
        }
        Ok(LogTree { tree, lines })
    }
}

/// The latest note of `dir`'s `checkpoints.log`, its size and root (unverified).
fn latest_checkpoint(dir: &Path) -> Result<(Vec<u8>, u64, Hash), ProveError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(ProveError::Io { path, source }),
    };
    let (notes, _) = split_log(&bytes);
    let note = notes.last().ok_or_else(|| ProveError::NoCheckpoint {
        dir: dir.to_path_buf(),
    })?;
    let (size, root) = read_body(note).ok_or_else(|| ProveError::Malformed {
        dir: dir.to_path_buf(),
    })?;
    Ok((note.to_vec(), size, root))
}

/// The size and root a note's checkpoint body states, signature unchecked.
fn read_body(note: &[u8]) -> Option<(u64, Hash)> {
    let note = signed_note::Note::from_bytes(note).ok()?;
    let body = tlog_tiles::Checkpoint::from_bytes(note.text()).ok()?;
    Some((body.size(), *body.hash()))
}

/// The proofs, against `dir`'s latest signed checkpoint, of every record
/// whose dossier is one of `dossiers`; and the `seq` of those the checkpoint
/// does not cover yet.
pub fn prove_records(
    dir: &Path,
    replica: Option<&str>,
    dossiers: &[String],
) -> Result<(Vec<InclusionProof>, Vec<u64>), ProveError> {
    let log = LogTree::read(dir)?;
    let (note, size, root) = latest_checkpoint(dir)?;
    if log.tree.root_at(size).ok() != Some(root) {
        return Err(ProveError::Mismatch {
            dir: dir.to_path_buf(),
            size,
        });
    }
    let needles: Vec<String> = dossiers
        .iter()
        .map(|d| format!("\"dossier\":\"{d}\""))
        .collect();
    let checkpoint = String::from_utf8_lossy(&note).into_owned();
    let mut proofs = Vec::new();
    let mut uncovered = Vec::new();
    for (index, line) in log.lines.iter().enumerate() {
        let text = String::from_utf8_lossy(line);
        if !needles.iter().any(|n| text.contains(n.as_str())) {
            continue;
        }
        let Ok(record) = chain::parse(line) else {
            continue;
        };
        if !record
            .dossier
            .as_ref()
            .is_some_and(|d| dossiers.contains(d))
        {
            continue;
        }
        let index = index as u64;
        if index >= size {
            uncovered.push(record.seq);
            continue;
        }
        let path = log
            .tree
            .inclusion_proof(index, size)
            .map_err(|_| ProveError::Mismatch {
                dir: dir.to_path_buf(),
                size,
            })?;
        proofs.push(InclusionProof {
            format: PROOF_FORMAT.to_owned(),
            replica: replica.map(str::to_owned),
            leaf_index: index,
            record: text.into_owned(),
            tree_size: size,
            inclusion_path: path.iter().map(|h| STANDARD.encode(h.0)).collect(),
            checkpoint: checkpoint.clone(),
        });
    }
    Ok((proofs, uncovered))
}

/// The latest signed checkpoint of `dir`, once its tree is rebuilt from the
/// records and has that checkpoint's root, and it covers every record up to
/// `last_seq`: the checkpoint an access report's records of that log are
/// proven against. `None` for a log that has no signed checkpoint.
pub fn proven_checkpoint(
    dir: &Path,
    last_seq: u64,
) -> Result<Option<ProvenCheckpoint>, ProveError> {
    let (note, size, root) = match latest_checkpoint(dir) {
        Ok(latest) => latest,
        Err(ProveError::NoCheckpoint { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if last_seq > size {
        return Err(ProveError::Uncovered {
            dir: dir.to_path_buf(),
            seq: last_seq,
            size,
        });
    }
    let log = LogTree::read(dir)?;
    if log.tree.root_at(size).ok() != Some(root) {
        return Err(ProveError::Mismatch {
            dir: dir.to_path_buf(),
            size,
        });
    }
    let origin = signed_note::Note::from_bytes(&note)
        .ok()
        .and_then(|n| tlog_tiles::Checkpoint::from_bytes(n.text()).ok())
        .map(|c| c.origin().to_owned())
        .unwrap_or_default();
    Ok(Some(ProvenCheckpoint {
        origin,
        tree_size: size,
        root_hash: STANDARD.encode(root.0),
        signed_note: String::from_utf8_lossy(&note).into_owned(),
    }))
}

/// Why an inclusion proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofDefect {
    #[error("not a proof document ({0})")]
    NotAProof(String),
    #[error("the checkpoint: {0}")]
    Checkpoint(NoteDefect),
    #[error("the proof says tree size {stated}, but its checkpoint signs size {signed}")]
    SizeMismatch { stated: u64, signed: u64 },
    #[error("the record is not an audit record: {0}")]
    NotARecord(String),
    #[error("the leaf index {index} is wrong: the record's seq is {seq}, so its index is seq - 1")]
    WrongIndex { index: u64, seq: u64 },
    #[error("the leaf index {index} is outside the checkpoint's tree of size {size}")]
    OutOfTree { index: u64, size: u64 },
    #[error("the inclusion path holds a hash that is not 32 bytes of base64")]
    BadPath,
    #[error(
        "the record is not leaf {index} of the signed tree of size {size}: the record or its path was altered"
    )]
    NotIncluded { index: u64, size: u64 },
}

/// A proof that held: the leaf and the checkpoint it is proven against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenLeaf {
    /// The origin of the log whose checkpoint signs the record.
    pub origin: String,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub root: String,
}

/// Checks a proof document with the public key only: the checkpoint's
/// signature and origin, the leaf index against the record's `seq`, and the
/// path from the record's leaf hash up to the signed root.
pub fn check_inclusion_proof(
    document: &[u8],
    verifier: &CheckpointVerifier,
) -> Result<ProvenLeaf, ProofDefect> {
    let proof: InclusionProof =
        serde_json::from_slice(document).map_err(|e| ProofDefect::NotAProof(format!("{e}")))?;
    if proof.format != PROOF_FORMAT {
        return Err(ProofDefect::NotAProof(format!(
            "format {:?}, expected {PROOF_FORMAT:?}",
            proof.format
        )));
    }
    let verifier = verifier.for_log_of(proof.checkpoint.as_bytes());
    let signed = verifier
        .verify(proof.checkpoint.as_bytes())
        .map_err(ProofDefect::Checkpoint)?;
    if proof.tree_size != signed.size {
        return Err(ProofDefect::SizeMismatch {
            stated: proof.tree_size,
            signed: signed.size,
        });
    }
    let record = chain::parse(proof.record.as_bytes()).map_err(ProofDefect::NotARecord)?;
    if record.seq.checked_sub(1) != Some(proof.leaf_index) {
        return Err(ProofDefect::WrongIndex {
            index: proof.leaf_index,
            seq: record.seq,
        });
    }
    if proof.leaf_index >= signed.size {
        return Err(ProofDefect::OutOfTree {
            index: proof.leaf_index,
            size: signed.size,
        });
    }
    let path = proof
        .inclusion_path
        .iter()
        .map(|h| decode_hash(h).ok_or(ProofDefect::BadPath))
        .collect::<Result<Vec<Hash>, _>>()?;
    tree::check_inclusion(
        &path,
        signed.size,
        signed.root,
        proof.leaf_index,
        leaf_hash(proof.record.as_bytes()),
    )
    .map_err(|_| ProofDefect::NotIncluded {
        index: proof.leaf_index,
        size: signed.size,
    })?;
    Ok(ProvenLeaf {
        origin: verifier.origin().to_owned(),
        leaf_index: proof.leaf_index,
        tree_size: signed.size,
        root: STANDARD.encode(signed.root.0),
    })
}

fn decode_hash(text: &str) -> Option<Hash> {
    let bytes = STANDARD.decode(text).ok()?;
    Some(Hash(<[u8; 32]>::try_from(bytes.as_slice()).ok()?))
}

/// Why a later checkpoint does not extend an earlier one.
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyDefect {
    #[error("the {which} checkpoint: {defect}")]
    Checkpoint {
        which: &'static str,
        defect: NoteDefect,
    },
    #[error("rolled back: the new checkpoint signs {new} records, fewer than the old one's {old}")]
    NewerIsSmaller { old: u64, new: u64 },
    #[error(
        "rolled back: the log holds {records} records, but the new checkpoint signs {new}; records were removed after it was signed"
    )]
    LogShorter { records: u64, new: u64 },
    #[error(
        "the log's tree at size {new} differs from the new checkpoint's root: this log is not the one the new checkpoint signs (rewritten, or forked)"
    )]
    LogDiffers { new: u64 },
    #[error(
        "forked: the new checkpoint (size {new}) does not extend the old one (size {old}); the history signed at size {old} was rewritten"
    )]
    Forked { old: u64, new: u64 },
    #[error(transparent)]
    Log(#[from] ProveError),
}

/// A consistency proof that held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    pub old_size: u64,
    pub new_size: u64,
    pub new_root: String,
    /// The proof's hashes, base64.
    pub proof: Vec<String>,
}

/// Checks both notes with `verifier`, computes the consistency proof from
/// the log in `dir` and checks it between the two signed roots.
pub fn prove_consistency(
    dir: &Path,
    verifier: &CheckpointVerifier,
    old_note: &[u8],
    new_note: &[u8],
) -> Result<Consistency, ConsistencyDefect> {
    let verifier = verifier.for_log_of(old_note);
    let old = verifier
        .verify(old_note)
        .map_err(|defect| ConsistencyDefect::Checkpoint {
            which: "old",
            defect,
        })?;
    let new = verifier
        .verify(new_note)
        .map_err(|defect| ConsistencyDefect::Checkpoint {
            which: "new",
            defect,
        })?;
    if new.size < old.size {
        return Err(ConsistencyDefect::NewerIsSmaller {
            old: old.size,
            new: new.size,
        });
    }
    let log = LogTree::read(dir)?;
    if log.tree.size() < new.size {
        return Err(ConsistencyDefect::LogShorter {
            records: log.tree.size(),
            new: new.size,
        });
    }
    if log.tree.root_at(new.size).ok() != Some(new.root) {
        return Err(ConsistencyDefect::LogDiffers { new: new.size });
    }
    let forked = || ConsistencyDefect::Forked {
        old: old.size,
        new: new.size,
    };
    let proof = log
        .tree
        .consistency_proof(old.size, new.size)
        .map_err(|_| forked())?;
    tree::check_consistency(&proof, new.size, new.root, old.size, old.root)
        .map_err(|_| forked())?;
    Ok(Consistency {
        old_size: old.size,
        new_size: new.size,
        new_root: STANDARD.encode(new.root.0),
        proof: proof.iter().map(|h| STANDARD.encode(h.0)).collect(),
    })
}
