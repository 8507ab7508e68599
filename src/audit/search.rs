//! Every recorded access to one dossier, found by its keyed hash under every key, in every replica's log.
//!
//! A numéro and a NIR of the same person hash differently: a data subject's
//! access request searches for both. A dossier also hashes differently under
//! each key the log has used: the current one and the former ones
//! (`audit.previous_hmac_keys`) are all tried.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::domain::Lookup;

use super::chain;
use super::files;
use super::key::AuditKey;
use super::record::Record;
use super::replicas::LogDir;

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

/// One record found by [`search_logs`], and the replica whose log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub replica: Option<String>,
    pub record: Record,
}

/// Scans every audit file of `dir` for records of `lookup`'s dossier.
pub fn search(dir: &Path, key: &AuditKey, lookup: &Lookup) -> Result<SearchResult, SearchError> {
    scan(dir, &[key.pseudonymize(lookup)])
}

/// Scans every log given for records of `lookup`'s dossier under any of
/// `keys`: the records found, by time (then replica and `seq`), with how many
/// files were read and how many damaged lines named the dossier.
pub fn search_logs(
    logs: &[LogDir],
    keys: &[AuditKey],
    lookup: &Lookup,
) -> Result<(Vec<Found>, SearchResult), SearchError> {
    let dossiers: Vec<String> = keys.iter().map(|key| key.pseudonymize(lookup)).collect();
    let mut found = Vec::new();
    let mut total = SearchResult {
        records: Vec::new(),
        files: 0,
        unreadable_lines: 0,
    };
    for log in logs {
        let result = scan(&log.path, &dossiers)?;
        total.files += result.files;
        total.unreadable_lines += result.unreadable_lines;
        found.extend(result.records.into_iter().map(|record| Found {
            replica: log.replica.clone(),
            record,
        }));
    }
    found.sort_by(|a, b| {
        (&a.record.time, &a.replica, a.record.seq).cmp(&(&b.record.time, &b.replica, b.record.seq))
    });
    total.records = found.iter().map(|f| f.record.clone()).collect();
    Ok((found, total))
}

/// The records of `dir` whose dossier is one of `dossiers`, in chain order.
fn scan(dir: &Path, dossiers: &[String]) -> Result<SearchResult, SearchError> {
    let needles: Vec<String> = dossiers
        .iter()
        .map(|dossier| format!("\"dossier\":\"{dossier}\""))
        .collect();
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
            if !needles.iter().any(|n| contains(text, n.as_bytes())) {
                continue;
            }
            match chain::parse(text) {
                Ok(record)
                    if record
                        .dossier
                        .as_ref()
                        .is_some_and(|d| dossiers.contains(d)) =>
                {
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
