//! A data subject's access report (GDPR art. 15): every recorded access to one dossier, as JSON or a standalone HTML page.
//!
//! Built from what [`super::search_logs`] found for one lookup, so it holds
//! records of that dossier only. Each access keeps what the data subject is
//! owed: when, which post, for what purpose, how it ended and which fields
//! were released. The agent's `sub` appears only when asked for
//! (`--include-agents`); the case reference, request and trace ids, token
//! id and certificate never do. The report names no identifier of the
//! dossier: the letter that carries it does.
//!
//! The HTML page needs nothing but itself: inline style, one table, an
//! inline SVG chart of accesses per month, no script, every value escaped.

use std::fmt::Write as _;

use serde::Serialize;

use super::record::Outcome;
use super::replicas::LogDir;
use super::search::Found;

/// The version of the JSON form, in its `format` field.
pub const REPORT_FORMAT: &str = "caf-broker-access-report/1";

/// The report on one dossier, ready to be written as JSON or HTML.
#[derive(Debug, Clone, Serialize)]
pub struct AccessReport {
    /// [`REPORT_FORMAT`].
    pub format: &'static str,
    /// When the report was made, RFC 3339 UTC.
    pub generated_at: String,
    /// Whether `agent` is filled in.
    pub include_agents: bool,
    /// The logs read, one per replica.
    pub logs: Vec<ReportLog>,
    /// Every access, oldest first.
    pub accesses: Vec<ReportAccess>,
    /// Accesses per calendar month (UTC), from the first access's month to
    /// the last's, months without access included.
    pub per_month: Vec<MonthCount>,
}

/// One log the report read.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLog {
    /// The replica's id; `null` for a log lying directly in the directory given.
    pub replica: Option<String>,
    /// The accesses of this report found in it.
    pub accesses: usize,
    /// The signed checkpoint this log's records were proven against (filled
    /// by the caller, see `proof::proven_checkpoint`); `null` when the log has
    /// none, or none that its records match and that covers them.
    pub checkpoint: Option<ProvenCheckpoint>,
}

/// A signed checkpoint of a log (C2SP tlog-checkpoint), and where the
/// report's records of that log sit in its tree.
#[derive(Debug, Clone, Serialize)]
pub struct ProvenCheckpoint {
    /// The log's name: its checkpoints' origin (`audit.log_origin/<replica>`).
    pub origin: String,
    /// The tree size the checkpoint signs.
    pub tree_size: u64,
    /// The root hash, base64 as in the checkpoint.
    pub root_hash: String,
    /// The whole signed note, as `audit verify-proof` takes it.
    pub signed_note: String,
}

/// One access to the dossier.
#[derive(Debug, Clone, Serialize)]
pub struct ReportAccess {
    /// RFC 3339 UTC, as recorded.
    pub time: String,
    /// The replica whose log holds the record (`null`: the directory given).
    pub replica: Option<String>,
    /// The record's `seq` in that log: what `audit prove` finds it by.
    pub seq: u64,
    /// The consular post that asked.
    pub post: Option<String>,
    /// The purpose it declared.
    pub purpose: Option<String>,
    pub outcome: Outcome,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The field paths released (empty unless `outcome` is `released`).
    pub released: Vec<String>,
    /// The agent's `sub`; present only with `--include-agents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// The accesses of one month, `YYYY-MM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthCount {
    pub month: String,
    pub accesses: usize,
}

impl AccessReport {
    /// The report on what was found in `logs`; `generated_at` is RFC 3339 UTC.
    pub fn build(
        found: &[Found],
        logs: &[LogDir],
        include_agents: bool,
        generated_at: String,
    ) -> AccessReport {
        // Only access records: a policy reload, an alert or a summary is no
        // access to a dossier (and names none), whatever a search returned.
        let found: Vec<&Found> = found.iter().filter(|f| f.record.is_access()).collect();
        let accesses: Vec<ReportAccess> = found
            .iter()
            .map(|f| ReportAccess {
                time: f.record.time.clone(),
                replica: f.replica.clone(),
                seq: f.record.seq,
                post: f.record.post.clone(),
                purpose: f.record.purpose.clone(),
                outcome: f.record.outcome,
                status: f.record.status,
                released: f.record.released.clone(),
                agent: f.record.sub.clone().filter(|_| include_agents),
            })
            .collect();
        let logs = logs
            .iter()
            .map(|log| ReportLog {
                replica: log.replica.clone(),
                accesses: found.iter().filter(|f| f.replica == log.replica).count(),
                checkpoint: None,
            })
            .collect();
        let per_month = per_month(&accesses);
        AccessReport {
            format: REPORT_FORMAT,
            generated_at,
            include_agents,
            logs,
            accesses,
            per_month,
        }
    }

    /// The JSON form, pretty-printed.
    pub fn to_json(&self) -> String {
        // Plain data of strings and numbers: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The standalone HTML page.
    pub fn to_html(&self) -> String {
        let mut page = String::with_capacity(4096 + self.accesses.len() * 256);
        page.push_str(concat!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<title>Accesses to your CAF dossier</title>\n<style>\n",
            "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1b1b1b}\n",
            "h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}\n",
            "table{border-collapse:collapse;width:100%;font-size:.95rem}\n",
            "th,td{border:1px solid #c8c8c8;padding:.35rem .5rem;text-align:left;vertical-align:top}\n",
            "th{background:#eef1f6}tbody tr:nth-child(even){background:#f8f9fb}\n",
            ".released{color:#0b5e1b}.refused{color:#9b1c1c}.muted{color:#555}.nowrap{white-space:nowrap}\n",
            "svg{max-width:100%;height:auto}\n",
            "</style>\n</head>\n<body>\n<h1>Accesses to your CAF dossier</h1>\n"
        ));
        let _ = writeln!(page, "<p>{}</p>", escape(&self.summary()));
        page.push_str("<h2>Accesses per month</h2>\n");
        page.push_str(&self.timeline_svg());
        page.push_str("<h2>Every access</h2>\n<table>\n<thead><tr>");
        page.push_str("<th>Date (UTC)</th><th>Post</th><th>Purpose</th><th>Outcome</th><th>Fields released</th>");
        if self.include_agents {
            page.push_str("<th>Agent</th>");
        }
        page.push_str("</tr></thead>\n<tbody>\n");
        for access in &self.accesses {
            let outcome = outcome_name(access.outcome);
            let class = match access.outcome {
                Outcome::Released => "released",
                _ => "refused",
            };
            let released = if access.released.is_empty() {
                "<span class=\"muted\">none</span>".to_owned()
            } else {
                escape(&access.released.join(", "))
            };
            let _ = write!(
                page,
                "<tr><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td>{}</td><td class=\"{class}\">{} ({})</td><td>{released}</td>",
                escape(&display_time(&access.time)),
                escape(access.post.as_deref().unwrap_or("unknown")),
                escape(access.purpose.as_deref().unwrap_or("none declared")),
                escape(outcome),
                access.status,
            );
            if self.include_agents {
                let _ = write!(
                    page,
                    "<td>{}</td>",
                    escape(access.agent.as_deref().unwrap_or("unknown"))
                );
            }
            page.push_str("</tr>\n");
        }
        page.push_str("</tbody>\n</table>\n<h2>Integrity</h2>\n<ul>\n");
        for log in &self.logs {
            let name = log.replica.as_deref().unwrap_or("single log");
            let proof = match &log.checkpoint {
                Some(c) => format!(
                    "proven against the signed checkpoint of {} at tree size {} (root {})",
                    c.origin, c.tree_size, c.root_hash
                ),
                None => "not proven against a signed checkpoint".to_owned(),
            };
            let _ = writeln!(
                page,
                "<li>Log {}: {} access(es); {}.</li>",
                escape(name),
                log.accesses,
                escape(&proof)
            );
        }
        let _ = writeln!(
            page,
            "</ul>\n<p class=\"muted\">Generated {} by caf-broker.</p>\n</body>\n</html>",
            escape(&display_time(&self.generated_at))
        );
        page
    }

    fn summary(&self) -> String {
        match (self.accesses.first(), self.accesses.last()) {
            (Some(first), Some(last)) => format!(
                "{} access(es) to your dossier were recorded between {} and {} (UTC), in {} log(s).",
                self.accesses.len(),
                display_time(&first.time),
                display_time(&last.time),
                self.logs.len()
            ),
            _ => format!(
                "No access to your dossier is recorded in the {} log(s) read.",
                self.logs.len()
            ),
        }
    }

    /// A bar per month, its count above it and its month below.
    fn timeline_svg(&self) -> String {
        const STEP: usize = 48;
        const BAR: usize = 32;
        const TOP: usize = 20;
        const CHART: usize = 120;
        const LEFT: usize = 16;
        let months = &self.per_month;
        let width = LEFT * 2 + STEP * months.len().max(1);
        let height = TOP + CHART + 30;
        let highest = months.iter().map(|m| m.accesses).max().unwrap_or(0).max(1);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"Accesses per month\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
        );
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>",
            TOP + CHART,
            width - LEFT,
            TOP + CHART
        );
        if months.is_empty() {
            let _ = writeln!(
                svg,
                "<text x=\"{LEFT}\" y=\"{}\" font-size=\"12\" fill=\"#555\">No access recorded.</text>",
                TOP + CHART / 2
            );
        }
        for (i, month) in months.iter().enumerate() {
            let bar = CHART * month.accesses / highest;
            let x = LEFT + i * STEP + (STEP - BAR) / 2;
            let y = TOP + CHART - bar;
            let middle = x + BAR / 2;
            let label = escape(&month.month);
            let _ = writeln!(
                svg,
                "<g><title>{label}: {} access(es)</title><rect class=\"bar\" x=\"{x}\" y=\"{y}\" width=\"{BAR}\" height=\"{bar}\" fill=\"#2f5d9a\"/>\
                 <text x=\"{middle}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{middle}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#333\">{label}</text></g>",
                month.accesses,
                y.saturating_sub(4),
                month.accesses,
                TOP + CHART + 16
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Counts per `YYYY-MM`, every month from the first to the last included.
fn per_month(accesses: &[ReportAccess]) -> Vec<MonthCount> {
    let month_of = |time: &str| -> Option<(i32, u32)> {
        let year = time.get(..4)?.parse().ok()?;
        let month = time
            .get(5..7)?
            .parse()
            .ok()
            .filter(|m| (1..=12).contains(m))?;
        Some((year, month))
    };
    let months: Vec<(i32, u32)> = accesses.iter().filter_map(|a| month_of(&a.time)).collect();
    let (Some(&first), Some(&last)) = (months.iter().min(), months.iter().max()) else {
        return Vec::new();
    };
    let mut counts = Vec::new();
    let mut current = first;
    while current <= last {
        counts.push(MonthCount {
            month: format!("{:04}-{:02}", current.0, current.1),
            accesses: months.iter().filter(|&&m| m == current).count(),
        });
        current = if current.1 == 12 {
            (current.0 + 1, 1)
        } else {
            (current.0, current.1 + 1)
        };
    }
    counts
}

/// `2026-11-30T18:24:42.123456Z` as `2026-11-30 18:24:42`.
fn display_time(time: &str) -> String {
    match time.get(..19) {
        Some(head) => head.replacen('T', " ", 1),
        None => time.to_owned(),
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Released => "released",
        Outcome::Refused => "refused",
        Outcome::Unauthenticated => "unauthenticated",
        Outcome::Invalid => "invalid request",
        Outcome::QuotaExceeded => "quota exceeded",
        Outcome::NotFound => "not found",
        Outcome::UpstreamError => "CAF unavailable",
        Outcome::InternalError => "internal error",
        // Outcomes of policy reloads, which a report leaves out.
        Outcome::Applied => "policy applied",
        Outcome::Rejected => "policy rejected",
    }
}

/// Text made safe in HTML content and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Record;

    fn found(time: &str, seq: u64, sub: &str) -> Found {
        let line = format!(
            r#"{{"seq":{seq},"time":"{time}","request_id":"00000000-0000-0000-0000-000000000001","trace_id":null,"post":"TN-TUNIS","sub":"{sub}","role":"agent_consulaire","purpose":"verification_radiation","case_reference":"TN-2026/1","dossier":"{d}","outcome":"released","status":200,"released":["identite.nom"],"policy_version":null,"cache":null,"prev":"","hash":""}}"#,
            d = "ab".repeat(32)
        );
        let record: Record = serde_json::from_str(&line).unwrap();
        Found {
            replica: Some("paris-1".into()),
            record,
        }
    }

    fn logs() -> Vec<LogDir> {
        vec![LogDir {
            replica: Some("paris-1".into()),
            path: "x".into(),
        }]
    }

    #[test]
    fn months_without_access_are_counted_as_zero_across_a_year_end() {
        let report = AccessReport::build(
            &[
                found("2025-11-03T10:00:00.000000Z", 1, "a"),
                found("2026-02-01T10:00:00.000000Z", 2, "a"),
                found("2026-02-11T10:00:00.000000Z", 3, "a"),
            ],
            &logs(),
            false,
            "2026-03-01T00:00:00Z".into(),
        );
        let counts: Vec<_> = report
            .per_month
            .iter()
            .map(|m| (m.month.as_str(), m.accesses))
            .collect();
        assert_eq!(
            counts,
            [
                ("2025-11", 1),
                ("2025-12", 0),
                ("2026-01", 0),
                ("2026-02", 2)
            ]
        );
    }

    #[test]
    fn agents_appear_only_when_asked_for_and_text_is_escaped() {
        let accesses = [found("2026-02-01T10:00:00.000000Z", 1, "<b>&agent</b>")];
        let without = AccessReport::build(&accesses, &logs(), false, "t".into());
        assert!(
            !without.to_json().contains("agent\""),
            "{}",
            without.to_json()
        );
        assert!(!without.to_html().contains("agent"));
        let with = AccessReport::build(&accesses, &logs(), true, "t".into());
        let html = with.to_html();
        assert!(html.contains("&lt;b&gt;&amp;agent&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(with.to_json().contains(r#""agent": "<b>&agent</b>""#));
    }

    #[test]
    fn a_record_that_is_not_an_access_is_left_out_of_the_report() {
        let mut reload = found("2026-02-02T10:00:00.000000Z", 2, "a");
        reload.record.kind = Some(crate::audit::record::RecordKind::PolicyReload);
        let accesses = [found("2026-02-01T10:00:00.000000Z", 1, "a"), reload];
        let report = AccessReport::build(&accesses, &logs(), false, "t".into());
        let seqs: Vec<u64> = report.accesses.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [1]);
        assert_eq!(report.logs[0].accesses, 1);
    }

    #[test]
    fn the_report_never_carries_case_references_or_request_ids() {
        let accesses = [found("2026-02-01T10:00:00.000000Z", 1, "a")];
        let report = AccessReport::build(&accesses, &logs(), true, "t".into());
        for text in [report.to_json(), report.to_html()] {
            for hidden in ["TN-2026/1", "00000000-0000-0000-0000-000000000001", "abab"] {
                assert!(!text.contains(hidden), "{hidden} in {text}");
            }
        }
    }
}
