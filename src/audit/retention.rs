//! Retention: files older than `retention_days` are removed, and the last removed record is kept as a checkpoint.
//!
//! The checkpoint (`checkpoint.json`) holds the `seq` and `hash` of the last
//! record removed, the Merkle tree's right edge after it and, with a signing
//! key, the signed checkpoint of the tree at that size, so that `verify` checks the remaining chain from that point
//! instead of from the first record ever. It is written (and made durable)
//! before any file is removed: a crash in between leaves files that `verify`
//! skips as already retired and that the next run removes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::Span;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::chain;
use super::files::{self, FileName};
use super::signing::CheckpointSigner;
use super::tree::{Edge, Hash, leaf_hash};

pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// The last record removed by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    /// The newest file removed.
    pub removed_through: String,
    /// The tree's right edge after record `seq` (hex, largest subtree first):
    /// what later roots are computed from once the records are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edge: Vec<String>,
    /// The signed checkpoint of the tree of `seq` records, when a signing key
    /// is configured: what makes this file impossible to forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Checkpoint {
    /// The tree's edge at the cut; `None` when the file predates the tree
    /// or its edge is malformed.
    pub fn tree_edge(&self) -> Option<Edge> {
        let hashes = self
            .edge
            .iter()
            .map(|h| {
                let bytes = hex::decode(h).ok()?;
                Some(Hash(<[u8; 32]>::try_from(bytes).ok()?))
            })
            .collect::<Option<Vec<Hash>>>()?;
        Edge::from_parts(self.seq, hashes).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: cannot read the retention checkpoint: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: the retention checkpoint is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Reads `dir/checkpoint.json`; `None` when retention never removed anything.
pub fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| CheckpointError::Invalid {
            path,
            reason: format!("line {}, column {}", e.line(), e.column()),
        })
}

/// What one retention run did.
#[derive(Debug, Default)]
pub(super) struct Retired {
    pub removed: Vec<FileName>,
    pub checkpoint: Option<Checkpoint>,
}

/// Removes the files of days before `today - retention_days`, never the
/// newest file (the one being appended to).
///
/// Nothing is removed when the last record of the files to remove cannot be
/// read: the checkpoint would be wrong, and the evidence is kept.
pub(super) fn retire(
    dir: &Path,
    today: Date,
    retention_days: u32,
    signer: Option<&CheckpointSigner>,
) -> io::Result<Retired> {
    let cutoff = today.saturating_sub(Span::new().days(i64::from(retention_days)));
    let mut all = files::list(dir)?;
    all.pop();
    let old: Vec<(FileName, PathBuf)> = all
        .into_iter()
        .filter(|(name, _)| name.day < cutoff)
        .collect();
    let Some((newest_old, _)) = old.last() else {
        return Ok(Retired::default());
    };

    let previous = read_checkpoint(dir).map_err(io::Error::other)?;
    let mut edge = match &previous {
        None => Some(Edge::empty()),
        Some(p) => p.tree_edge(),
    };
    let mut last = None;
    for (name, path) in &old {
        let text = std::fs::read(path)?;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record = chain::parse(line).map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: a record is unreadable ({reason}); run `caf-broker audit verify`",
                        name.file_name()
                    ),
                )
            })?;
            if let Some(edge) = edge.as_mut() {
                if record.seq <= edge.size() {
                    continue;
                }
                if record.seq != edge.size() + 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: seq {} where {} was expected; run `caf-broker audit verify`",
                            name.file_name(),
                            record.seq,
                            edge.size() + 1
                        ),
                    ));
                }
                edge.push(leaf_hash(line));
            }
            last = Some(record);
        }
    }

    let checkpoint = match (last, previous) {
        (Some(record), previous) if previous.as_ref().is_none_or(|p| p.seq < record.seq) => {
            Some(Checkpoint {
                seq: record.seq,
                hash: record.hash,
                time: record.time,
                removed_through: newest_old.file_name(),
                edge: edge
                    .as_ref()
                    .map(|e| e.hashes().iter().map(|h| hex::encode(h.0)).collect())
                    .unwrap_or_default(),
                note: match (signer, &edge) {
                    (Some(signer), Some(edge)) => Some(
                        signer
                            .sign(edge.size(), edge.root())
                            .and_then(|n| String::from_utf8(n).map_err(|e| e.to_string()))
                            .map_err(io::Error::other)?,
                    ),
                    _ => None,
                },
            })
        }
        _ => None,
    };
    if let Some(checkpoint) = &checkpoint {
        write_checkpoint(dir, checkpoint)?;
    }
    for (_, path) in &old {
        std::fs::remove_file(path)?;
    }
    files::sync_dir(dir)?;
    Ok(Retired {
        removed: old.into_iter().map(|(name, _)| name).collect(),
        checkpoint,
    })
}

/// Replaces the checkpoint atomically and durably.
fn write_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let mut file = files::create_owner_only(&tmp)?;
    let mut text = serde_json::to_vec(checkpoint).map_err(io::Error::other)?;
    text.push(b'\n');
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
    files::sync_dir(dir)
}
