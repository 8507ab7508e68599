//! Every recorded access to one dossier, found by its keyed hash.
//!
//! A numéro and a NIR of the same person hash differently: a data subject's
//! access request searches for both.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::domain::Lookup;

use super::chain;
use super::files;
use super::key::AuditKey;
use super::record::Record;

/// The records of one dossier, in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResult {
    pub records: Vec<Record>,
    pub files: usize,
    /// Lines naming the dossier that could not be read as records (run `audit verify`).
    pub unreadable_lines: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read: {source}")]
pub struct SearchError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Scans every audit file of `dir` for records of `lookup`'s dossier.
pub fn search(dir: &Path, key: &AuditKey, lookup: &Lookup) -> Result<SearchResult, SearchError> {
    let dossier = key.pseudonymize(lookup);
    let needle = format!("\"dossier\":\"{dossier}\"");
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SearchError { path, source }
    };
    let listed = files::list(dir).map_err(failed(dir))?;
    let mut result = SearchResult {
        records: Vec::new(),
        files: listed.len(),
        unreadable_lines: 0,
    };
    let mut line = Vec::new();
    for (_, path) in &listed {
        let mut reader = BufReader::new(File::open(path).map_err(failed(path))?);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(failed(path))? == 0 {
                break;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            // Parsing only the lines that name the dossier keeps a year of files quick to scan.
            if !contains(text, needle.as_bytes()) {
                continue;
            }
            match chain::parse(text) {
                Ok(record) if record.dossier.as_deref() == Some(dossier.as_str()) => {
                    result.records.push(record);
                }
                Ok(_) => {}
                Err(_) => result.unreadable_lines += 1,
            }
        }
    }
    Ok(result)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
