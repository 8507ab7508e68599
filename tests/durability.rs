//! Durability seen from the kernel: the real binary runs under `strace`, and
//! for every data request the trace shows its audit record written to the
//! audit file, then that file `fdatasync`ed (or `fsync`ed), and only then the
//! answer's first bytes sent on the client's socket.
//!
//! Needs Debian's `strace` (`.ci/run` installs it); without it the test fails
//! with a message saying so.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::config::Settings;
use futures_util::future::join_all;

/// The system calls that can write a record, make it durable, or send an answer.
const TRACED: &str = "trace=write,pwrite64,writev,fdatasync,fsync,sendto,sendmsg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_leaves_after_its_audit_record_is_written_and_synced() {
    require_strace();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("caf-broker-strace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let audit_dir = scratch.join("audit");
    let trace = scratch.join("trace");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("CAF_BROKER__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        // Plain HTTP: the answer's bytes, and its X-Request-Id, are readable in the trace.
        ("CAF_BROKER__SERVER__TLS", "false".into()),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off".into()),
        ("CAF_BROKER__SERVER__WORKERS", "2".into()),
        ("CAF_BROKER__AUDIT__DIR", audit_dir.display().to_string()),
        ("CAF_BROKER__UPSTREAM__RECORDS", "50".into()),
        ("CAF_BROKER__POLICY__WATCH", "false".into()),
        ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".into()),
        (
            "CAF_BROKER__QUOTAS__DEFAULT",
            "{ per_second = 1000, burst = 1000, per_day = 100000 }".into(),
        ),
        (
            "CAF_BROKER__QUOTAS__AGENT_DEFAULT",
            "{ per_second = 1000, burst = 1000, per_day = 100000 }".into(),
        ),
    ];
    // `-s`: whole strings, so that every record of a group commit's one write is seen.
    let strace = Traced(
        Command::new("strace")
            .args(["-f", "-qq", "-y", "-s", "1000000", "-e", TRACED, "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_caf-broker"))
            .arg("serve")
            .current_dir(root)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace starts"),
    );

    let settings = Settings::load_with_env(
        &root.join("config/broker.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.clone())),
    )
    .unwrap();
    let token = mint_dev_token(
        &settings.auth,
        DevClaims {
            sub: "agent-7".into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 600,
        },
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until_up(&client, &base, &trace).await;

    let ask = |numero: &'static str, purpose: &'static str| {
        let request = client
            .get(format!("{base}/v1/allocataires/{numero}"))
            .bearer_auth(&token)
            .header("X-Purpose", purpose)
            .header("X-Case-Reference", "STRACE-1")
            .send();
        async move {
            let response = request.await.expect("an answer");
            let status = response.status().as_u16();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, id)
        }
    };
    // One at a time, each outcome: released, not found, refused.
    let mut answered = vec![
        ask("1000002", "verification_radiation").await,
        ask("9999999", "verification_radiation").await,
        ask("1000002", "accompagnement_social").await,
    ];
    // Then together, so that records share a group commit.
    answered.extend(join_all((0..8).map(|_| ask("1000004", "verification_radiation"))).await);
    let statuses: Vec<u16> = answered.iter().map(|(status, _)| *status).collect();
    assert_eq!(&statuses[..3], [200, 404, 403]);
    assert!(statuses[3..].iter().all(|s| *s == 200), "{statuses:?}");

    let events = strace.stop(&trace);
    let audit_dir = audit_dir.display().to_string();
    for (_, id) in &answered {
        let order = order_of(&events, &audit_dir, id);
        if let Err(problem) = order {
            panic!("request {id}: {problem}");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn require_strace() {
    if Command::new("strace").arg("-V").output().is_ok() {
        return;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("strace is missing under CI=true: .ci/run must install it (apt-get install strace)");
    }
    panic!(
        "strace is not installed: this test proves the audit record is synced before the answer \
         leaves by tracing the broker's system calls; install it (apt-get install strace)"
    );
}

async fn wait_until_up(client: &reqwest::Client, base: &str, trace: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not start under strace within 60 s (can this process ptrace? \
             trace so far: {} bytes)",
            std::fs::metadata(trace).map_or(0, |m| m.len())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One line of the trace: which thread, which call, and whether it is the
/// call's start (with its arguments), its end (with its result), or both.
#[derive(Debug)]
struct Event {
    pid: u32,
    call: String,
    starts: bool,
    ends: bool,
    text: String,
}

/// Parses `strace -f -o` lines: `PID call(args) = result`, or the same split
/// into `PID call(args <unfinished ...>` and `PID <... call resumed>) = result`.
fn parse(line: &str) -> Option<Event> {
    let (pid, rest) = line.split_once(' ')?;
    let pid = pid.parse().ok()?;
    let rest = rest.trim_start();
    if let Some(resumed) = rest.strip_prefix("<... ") {
        let call = resumed.split_once(' ')?.0.to_owned();
        return Some(Event {
            pid,
            call,
            starts: false,
            ends: true,
            text: rest.to_owned(),
        });
    }
    let call = rest.split_once('(')?.0.to_owned();
    if !call.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some(Event {
        pid,
        call,
        starts: true,
        ends: !rest.ends_with("<unfinished ...>"),
        text: rest.to_owned(),
    })
}

/// The index of the line where the call started at `start` ends.
fn end_of(events: &[Event], start: usize) -> Option<usize> {
    let first = &events[start];
    if first.ends {
        return Some(start);
    }
    (start + 1..events.len())
        .find(|&i| events[i].pid == first.pid && events[i].call == first.call && events[i].ends)
}

/// The result of the call ending at `end` (`= 0`, `= 812`, `= -1 EIO ...`).
fn result_of(event: &Event) -> Option<i64> {
    // strace pads a resumed call's result: `<... write resumed>)    = 812`.
    let (_, result) = event.text.rsplit_once(')')?;
    let result = result.trim_start().strip_prefix('=')?;
    result.split_whitespace().next()?.parse().ok()
}

/// The file or socket a call's first argument names, as `-y` decodes it:
/// `write(14</var/audit/audit-2026-11-30.jsonl>, ...` gives the path.
fn fd_target(event: &Event) -> Option<&str> {
    let args = event.text.split_once('(')?.1;
    let (number, rest) = args.split_once('<')?;
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(rest.split_once('>')?.0)
}

/// Checks "record written, then synced, then answer sent" for one request id.
fn order_of(events: &[Event], audit_dir: &str, id: &str) -> Result<(), String> {
    let in_audit_file =
        |e: &Event| fd_target(e).is_some_and(|t| t.starts_with(audit_dir) && t.ends_with(".jsonl"));
    let record = format!(r#"request_id\":\"{id}\""#);
    let written = events
        .iter()
        .position(|e| {
            e.starts
                && matches!(e.call.as_str(), "write" | "pwrite64" | "writev")
                && in_audit_file(e)
                && e.text.contains(&record)
        })
        .ok_or("its audit record is never written to an audit file")?;
    let file = fd_target(&events[written]).unwrap_or_default().to_owned();
    let written_end = end_of(events, written).ok_or("the record's write never ends")?;
    if result_of(&events[written_end]).is_none_or(|n| n <= 0) {
        return Err(format!(
            "the record's write failed: {}",
            events[written_end].text
        ));
    }
    let synced = (written_end + 1..events.len())
        .find(|&i| {
            let e = &events[i];
            e.starts
                && matches!(e.call.as_str(), "fdatasync" | "fsync")
                && fd_target(e) == Some(file.as_str())
        })
        .ok_or(format!(
            "{file} is never fdatasync'ed after the record is written"
        ))?;
    let synced_end = end_of(events, synced).ok_or("the fdatasync never ends")?;
    if result_of(&events[synced_end]) != Some(0) {
        return Err(format!("the fdatasync failed: {}", events[synced_end].text));
    }
    let header = format!("x-request-id: {id}");
    let sent = events
        .iter()
        .position(|e| {
            e.starts
                && matches!(e.call.as_str(), "sendto" | "sendmsg" | "write" | "writev")
                && fd_target(e).is_some_and(|t| t.starts_with("socket:") || t.starts_with("TCP"))
                && e.text.contains(&header)
        })
        .ok_or("its answer is never seen on a socket")?;
    if sent < synced_end {
        return Err(format!(
            "the answer was sent (line {sent}) before its record was durable \
             (write ends at line {written_end}, fdatasync ends at line {synced_end})"
        ));
    }
    Ok(())
}

/// strace and the broker under it; both are stopped when this is dropped.
struct Traced(Child);

impl Traced {
    /// The broker traced: strace's only child.
    fn broker_pid(&self) -> Option<String> {
        let pid = self.0.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next().map(str::to_owned)
    }

    /// Stops the broker with SIGTERM, waits for strace to write the whole
    /// trace, and returns its lines.
    fn stop(mut self, trace: &Path) -> Vec<Event> {
        if let Some(pid) = self.broker_pid() {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        read_trace(trace)
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Some(pid) = self.broker_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_trace(trace: &Path) -> Vec<Event> {
    let text = std::fs::read(trace).expect("strace wrote its trace");
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(parse)
        .collect()
}
