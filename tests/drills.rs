//! Fault drills with real processes: the broker binary under load while its
//! Redis is killed and restarted, while the CAF flaps, while its audit volume
//! is full and then freed, and while it is stopped with SIGTERM. Each drill
//! fails if the guarantee it shows breaks; every load is bounded in count and
//! in time, and every process listens on loopback.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caf_broker::audit::verify_dir;
use caf_broker::auth::{DevClaims, mint_dev_token};
use caf_broker::config::Settings;
use caf_broker::simulator::{self, RunningSimulator, SimulatorOptions};

#[path = "support/audit_files.rs"]
mod audit_files;
#[path = "support/redis_server.rs"]
#[allow(dead_code, reason = "the drills use part of it")]
mod redis_server;

use audit_files::records;
use redis_server::RedisServer;

const ROOMY: &str = "{ per_second = 100000, burst = 100000, per_day = 1000000 }";
const RADIATION: &str = "verification_radiation";

// ---------------------------------------------------------------- helpers

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory for one drill.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caf-broker-drill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One broker process: its address, its settings (as the test reads them)
/// and its environment (for `caf-broker audit verify`).
struct Broker {
    child: Option<Child>,
    base: String,
    env: Vec<(String, String)>,
    settings: Settings,
}

impl Broker {
    /// The shipped configuration over plain HTTP on a free port, its audit
    /// log in `audit_dir/replica`, roomy agent quotas, with `extra` on top.
    fn env(audit_dir: &Path, replica: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            (
                "CAF_BROKER__SERVER__LISTEN".into(),
                format!("127.0.0.1:{port}"),
            ),
            ("CAF_BROKER__SERVER__TLS".into(), "false".into()),
            ("CAF_BROKER__SERVER__CLIENT_AUTH".into(), "off".into()),
            (
                "CAF_BROKER__AUDIT__DIR".into(),
                audit_dir.display().to_string(),
            ),
            ("CAF_BROKER__AUDIT__REPLICA_ID".into(), replica.into()),
            ("CAF_BROKER__UPSTREAM__RECORDS".into(), "300".into()),
            ("CAF_BROKER__QUOTAS__DEFAULT".into(), ROOMY.into()),
            ("CAF_BROKER__QUOTAS__AGENT_DEFAULT".into(), ROOMY.into()),
            (
                "CAF_BROKER__QUOTAS__AGENT_ERROR_BUDGET".into(),
                "{ per_second = 100000, burst = 100000 }".into(),
            ),
            // One record per request id: no off-hours alert when run at night.
            ("CAF_BROKER__ALERTS__OFF_HOURS".into(), "\"\"".into()),
        ];
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value.to_string()));
        }
        env
    }

    /// Starts `caf-broker` (through `sh -c prelude` when given, which then
    /// `exec`s it) and waits until it answers `/healthz`.
    async fn start(env: Vec<(String, String)>, prelude: Option<&str>) -> Self {
        let settings = Settings::load_with_env(
            &root().join("config/broker.toml"),
            env.iter().map(|(k, v)| (k.clone(), v.clone())),
        )
        .unwrap();
        let mut command = match prelude {
            Some(prelude) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prelude}; exec \"$0\""))
                    .arg(env!("CARGO_BIN_EXE_caf-broker"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_caf-broker")),
        };
        let child = command
            .current_dir(root())
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://{}", settings.server.listen);
        let broker = Self {
            child: Some(child),
            base,
            env,
            settings,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client
            .get(format!("{}/healthz", broker.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the broker did not start within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        broker
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn token(&self) -> String {
        let claims = DevClaims {
            sub: "agent-7".into(),
            post: "TN-TUNIS".into(),
            role: "agent_consulaire".into(),
            ttl_secs: 600,
        };
        mint_dev_token(&self.settings.auth, claims).unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `bound` for the process to end.
    fn wait_at_most(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit awaited.
    fn stop(&mut self) {
        self.signal("TERM");
        assert!(
            self.wait_at_most(Duration::from_secs(30)).is_some(),
            "the broker did not stop within 30 s of SIGTERM"
        );
    }

    /// `caf-broker audit verify` of this broker's audit directory passes.
    fn assert_audit_verifies(&self) {
        let output = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
            .args(["audit", "verify"])
            .arg(&self.settings.audit.dir)
            .current_dir(root())
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "caf-broker audit verify failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        token: &str,
        numero: &str,
    ) -> reqwest::Result<reqwest::Response> {
        get_dossier(client, &self.base, token, numero).await
    }

    async fn ready(&self, client: &reqwest::Client) -> u16 {
        client
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn get_dossier(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    numero: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .get(format!("{base}/v1/allocataires/{numero}"))
        .bearer_auth(token)
        .header("X-Purpose", RADIATION)
        .header("X-Case-Reference", "DRILL-1")
        .send()
        .await
}

/// A client whose every request is answered, or fails, within `bound`.
fn client_within(bound: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(bound).build().unwrap()
}

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The status of an answer, and its problem code.
type Answer = (u16, Option<String>);

async fn status_and_code(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    if status == 200 {
        return (status, None);
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().map(str::to_owned))
}

async fn simulator_on(listen: SocketAddr, fail_rate: f64) -> RunningSimulator {
    let mut options = SimulatorOptions::new(listen);
    options.records = 300;
    options.fail_rate = fail_rate;
    // A just-closed port may take a moment to be free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match simulator::start(options.clone()).await {
            Ok(running) => return running,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the simulator did not restart: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// ---------------------------------------------------------------- drills

/// Two replicas share a Redis whose post allows `PER_DAY` a day. The test
/// sends one request at a time, so that each count is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_and_restarted_the_replicas_never_grant_more_than_the_documented_fallback()
 {
    const PER_DAY: u64 = 120;
    const BEFORE: u64 = 40;
    // Every write on disk before it is acknowledged: the restarted Redis has
    // the counts of before the kill, as a production Redis with persistence.
    let mut redis = RedisServer::start_tls(&["--appendonly", "yes", "--appendfsync", "always"]);
    let dir = scratch("redis");
    let quotas = format!("{{ per_second = 100000, burst = 100000, per_day = {PER_DAY} }}");
    let url = redis.url();
    let extra = [
        ("CAF_BROKER__QUOTAS__BACKEND", "\"redis\""),
        ("CAF_BROKER__QUOTAS__REDIS_URL", url.as_str()),
        ("CAF_BROKER__QUOTAS__REPLICAS_HINT", "2"),
        ("CAF_BROKER__QUOTAS__DEFAULT", quotas.as_str()),
    ];
    let replicas = [
        Broker::start(Broker::env(&dir, "a", &extra), None).await,
        Broker::start(Broker::env(&dir, "b", &extra), None).await,
    ];
    let token = replicas[0].token();
    let client = client_within(Duration::from_secs(10));
    let ask = |i: usize| {
        let (client, token) = (&client, &token);
        let broker = &replicas[i % 2];
        async move {
            let response = broker.get(client, token, "1000002").await.unwrap();
            status_and_code(response).await
        }
    };

    // Redis up: every grant counted there.
    for i in 0..BEFORE as usize {
        assert_eq!(ask(i).await, (200, None), "request {i} with Redis up");
    }

    // Redis down: each replica grants at most its share of what was left,
    // floor((PER_DAY - last count seen) / replicas_hint), then refuses.
    redis.stop();
    let mut granted = [0u64; 2];
    let mut refused_in_a_row = 0;
    for i in 0..1000usize {
        match ask(i).await {
            (200, None) => {
                granted[i % 2] += 1;
                refused_in_a_row = 0;
            }
            (429, _) => refused_in_a_row += 1,
            other => panic!("during the outage, request {i} got {other:?}"),
        }
        if refused_in_a_row >= 10 {
            break;
        }
    }
    assert!(
        refused_in_a_row >= 10,
        "the replicas kept granting during the outage: {granted:?}"
    );
    // Replica a (even requests) last saw BEFORE - 1 counted, replica b BEFORE.
    let share_a = (PER_DAY - (BEFORE - 1)) / 2;
    let share_b = (PER_DAY - BEFORE) / 2;
    assert!(
        granted[0] > 0 && granted[1] > 0,
        "service continued: {granted:?}"
    );
    assert!(
        granted[0] <= share_a && granted[1] <= share_b,
        "granted {granted:?} during the outage; the shares are {share_a} and {share_b}"
    );
    assert!(granted[0] + granted[1] <= PER_DAY - BEFORE + 1);

    // Redis back with its counts: once the replicas have probed it (every
    // second), they grant exactly what Redis has left, and no more.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = 0u64;
    let mut i = 0usize;
    loop {
        match ask(i).await {
            (200, None) => after += 1,
            (429, _) if after >= PER_DAY - BEFORE => break,
            (429, _) => {
                assert!(
                    Instant::now() < deadline,
                    "the replicas did not resume on Redis within 20 s ({after} granted)"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("after the restart, request {i} got {other:?}"),
        }
        assert!(
            after <= PER_DAY - BEFORE,
            "after the restart, {after} granted: Redis had only {} left",
            PER_DAY - BEFORE
        );
        i += 1;
    }
    assert_eq!(
        after,
        PER_DAY - BEFORE,
        "the shared count resumed at {BEFORE}"
    );
    println!(
        "granted: {BEFORE} on Redis, {granted:?} during the outage, {after} after the restart"
    );
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CAF fails at random, fails always, is killed and comes back, while
/// eight clients keep asking: every answer is a dossier, a 404, or the
/// upstream problem of its status; the circuit opens (`/readyz` 503) and
/// closes again (200); no request waits longer than its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_caf_flapping_every_request_gets_a_timely_answer_with_the_right_code() {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut caf = Some(simulator_on(listen, 0.3).await);
    let dir = scratch("flap");
    let url = format!("http://{listen}");
    let broker = Broker::start(
        Broker::env(
            &dir,
            "flap",
            &[
                ("CAF_BROKER__UPSTREAM__KIND", "\"http\""),
                ("CAF_BROKER__UPSTREAM__URL", url.as_str()),
                ("CAF_BROKER__UPSTREAM__TIMEOUT_MS", "1000"),
                ("CAF_BROKER__UPSTREAM__CONNECT_TIMEOUT_MS", "500"),
                ("CAF_BROKER__UPSTREAM__RETRIES", "1"),
                ("CAF_BROKER__UPSTREAM__RETRY_BACKOFF_MS", "1"),
                ("CAF_BROKER__UPSTREAM__BREAKER_FAILURES", "3"),
                ("CAF_BROKER__UPSTREAM__BREAKER_OPEN_SECS", "1"),
                // Every lookup reaches the CAF.
                ("CAF_BROKER__CACHE__TTL_SECS", "1"),
                ("CAF_BROKER__CACHE__NOT_FOUND_TTL_SECS", "1"),
            ],
        ),
        None,
    )
    .await;
    let token = broker.token();
    let base = broker.base.clone();
    // The bound of one request: the upstream's 1 s, a retry, and room.
    let bound = Duration::from_secs(10);
    let client = client_within(bound);
    let statuses: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (client, base, token, statuses, stop) = (
                client.clone(),
                base.clone(),
                token.clone(),
                statuses.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                for i in 0..5_000usize {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let numero = format!("{}", 2_000_000 + (worker * 37 + i) % 400);
                    let response = get_dossier(&client, &base, &token, &numero)
                        .await
                        .unwrap_or_else(|e| {
                            panic!("a request got no answer within {bound:?}: {e}")
                        });
                    let answer = status_and_code(response).await;
                    statuses.lock().unwrap().push(answer);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let mut seen_ready = Vec::new();
    let watch = |seen: &mut Vec<u16>, status: u16| {
        if seen.last() != Some(&status) {
            seen.push(status);
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The CAF fails every call: the circuit opens.
    caf.as_ref().unwrap().set_fail_rate(1.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while broker.ready(&client).await != 503 {
        assert!(Instant::now() < deadline, "the circuit did not open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch(&mut seen_ready, 503);
    // The CAF is killed, then comes back healthy on the same port.
    caf.take().unwrap().kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let caf = simulator_on(listen, 0.0).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = broker.ready(&client).await;
        watch(&mut seen_ready, status);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the circuit did not close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Flapping again, then the load ends.
    caf.set_fail_rate(0.5).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker
            .await
            .expect("every request was answered within its bound");
    }
    assert_eq!(seen_ready.first(), Some(&503));
    assert_eq!(seen_ready.last(), Some(&200));

    let statuses = statuses.lock().unwrap().clone();
    let mut counts = std::collections::BTreeMap::<(u16, Option<String>), usize>::new();
    for answer in statuses.iter() {
        *counts.entry(answer.clone()).or_default() += 1;
        let right = match answer {
            (200, None) => true,
            (404, Some(code)) => code == "allocataire-not-found",
            (502, Some(code)) => code == "upstream-error",
            (503, Some(code)) => code == "upstream-unavailable",
            (504, Some(code)) => code == "upstream-timeout",
            _ => false,
        };
        assert!(right, "an answer {answer:?} while the CAF flapped");
    }
    println!("answers while the CAF flapped: {counts:?}; /readyz went {seen_ready:?}");
    for status in [200, 502, 503] {
        assert!(
            counts.keys().any(|(s, _)| *s == status),
            "no {status} among {counts:?}"
        );
    }
    caf.stop().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The broker runs with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored), so
/// that its audit files cannot grow past it: the write fails as on a full
/// volume. Raising the limit (`prlimit`) frees the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_volume_full_data_is_refused_and_flows_again_once_freed() {
    let dir = scratch("full");
    let mut broker = Broker::start(
        Broker::env(
            &dir,
            "full",
            &[
                ("CAF_BROKER__AUDIT__RETRY_INTERVAL_MS", "100"),
                ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "10"),
            ],
        ),
        // 64 KiB a file.
        Some("trap '' XFSZ; ulimit -S -f 64"),
    )
    .await;
    let token = broker.token();
    let client = client_within(Duration::from_secs(10));

    let mut answered = Vec::new();
    let mut full = false;
    for i in 0..5_000usize {
        let numero = if i % 2 == 0 { "1000002" } else { "1000004" };
        let response = broker.get(&client, &token, numero).await.unwrap();
        let id = request_id(&response);
        match status_and_code(response).await {
            (200, None) => answered.push(id),
            (503, Some(code)) if code == "audit-unavailable" => {
                full = true;
                break;
            }
            other => panic!("request {i} got {other:?}"),
        }
    }
    assert!(full, "the audit volume never filled");
    println!("{} answered before the volume was full", answered.len());
    assert!(!answered.is_empty());
    // While full, nothing is released.
    for _ in 0..5 {
        let response = broker.get(&client, &token, "1000002").await.unwrap();
        assert_eq!(
            status_and_code(response).await,
            (503, Some("audit-unavailable".into()))
        );
    }

    // Freed: the same process answers again.
    let status = Command::new("prlimit")
        .args(["--pid", &broker.pid().to_string(), "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = 0;
    while recovered < 20 {
        let response = broker.get(&client, &token, "1000004").await.unwrap();
        let id = request_id(&response);
        match status_and_code(response).await {
            (200, None) => {
                answered.push(id);
                recovered += 1;
            }
            (503, Some(code)) if code == "audit-unavailable" && recovered == 0 => {
                assert!(Instant::now() < deadline, "no recovery within 20 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("after the volume was freed, a request got {other:?}"),
        }
    }
    broker.stop();

    // No torn record: the log verifies, and every answered request is in it.
    broker.assert_audit_verifies();
    let log_dir = broker.settings.audit.log_dir();
    verify_dir(&log_dir).unwrap();
    let recorded: HashSet<String> = records(&log_dir)
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let lost = answered.iter().filter(|id| !recorded.contains(*id)).count();
    assert_eq!(lost, 0, "{lost} answered requests have no audit record");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while requests are held at the CAF and others keep coming: the
/// held requests are answered, every 200 is in the audit log, and the
/// process exits within `server.shutdown_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_sigterm_under_load_in_flight_requests_finish_and_every_answer_is_recorded() {
    const SHUTDOWN_SECS: u64 = 5;
    const HELD: u64 = 8;
    let caf = simulator_on("127.0.0.1:0".parse().unwrap(), 0.0).await;
    let dir = scratch("term");
    let url = caf.url();
    let shutdown = SHUTDOWN_SECS.to_string();
    let mut broker = Broker::start(
        Broker::env(
            &dir,
            "term",
            &[
                ("CAF_BROKER__UPSTREAM__KIND", "\"http\""),
                ("CAF_BROKER__UPSTREAM__URL", url.as_str()),
                ("CAF_BROKER__UPSTREAM__TIMEOUT_MS", "10000"),
                (
                    "CAF_BROKER__SERVER__SHUTDOWN_TIMEOUT_SECS",
                    shutdown.as_str(),
                ),
                ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "50"),
            ],
        ),
        None,
    )
    .await;
    let broker_ref = Arc::new((broker.base.clone(), broker.token()));
    let client = client_within(Duration::from_secs(30));
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = answered.clone();
    let get = move |numero: String| {
        let (client, broker_ref, answered) = (client.clone(), broker_ref.clone(), recorder.clone());
        async move {
            let (base, token) = &*broker_ref;
            let sent = client
                .get(format!("{base}/v1/allocataires/{numero}"))
                .bearer_auth(token)
                .header("X-Purpose", RADIATION)
                .header("X-Case-Reference", "DRILL-4")
                .send()
                .await;
            let response = sent.ok()?;
            let status = response.status().as_u16();
            if status == 200 {
                let id = request_id(&response);
                answered.lock().unwrap().push(id);
            }
            Some(status)
        }
    };

    // Load first, all answered.
    let warm: Vec<_> = (0..8)
        .map(|w| {
            let get = get.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    get(format!("{}", 2_000_000 + (w * 25 + i) % 200)).await;
                }
            })
        })
        .collect();
    for task in warm {
        task.await.unwrap();
    }
    let warm_answers = answered.lock().unwrap().len();
    assert!(
        warm_answers >= 100,
        "only {warm_answers} answers before the drill"
    );

    // Requests held at the CAF (dossiers not in the cache), in flight in the broker, when SIGTERM comes.
    caf.hold();
    let held: Vec<_> = (0..HELD)
        .map(|i| tokio::spawn(get(format!("{}", 2_000_200 + i))))
        .collect();
    tokio::time::timeout(Duration::from_secs(10), caf.in_flight_reaches(HELD))
        .await
        .expect("the held requests reached the CAF");
    broker.signal("TERM");
    let signalled = Instant::now();
    // More requests keep coming; they are answered or refused, never half.
    let late: Vec<_> = (0..8u64)
        .map(|i| tokio::spawn(get(format!("{}", 2_000_100 + i))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    caf.release();
    for task in held {
        assert_eq!(
            task.await.unwrap(),
            Some(200),
            "a request in flight at SIGTERM was not answered"
        );
    }
    for task in late {
        let status = task.await.unwrap();
        assert!(
            matches!(status, None | Some(200)),
            "a request sent after SIGTERM got {status:?}"
        );
    }
    let exit = broker.wait_at_most(Duration::from_secs(SHUTDOWN_SECS + 5));
    let took = signalled.elapsed();
    let exit = exit.expect("the broker did not exit after SIGTERM");
    println!("exit {took:?} after SIGTERM");
    assert!(exit.success(), "the broker exited with {exit}");
    assert!(
        took <= Duration::from_secs(SHUTDOWN_SECS),
        "exit {took:?} after SIGTERM, past shutdown_timeout_secs = {SHUTDOWN_SECS}"
    );

    broker.assert_audit_verifies();
    let log_dir = broker.settings.audit.log_dir();
    let recorded: HashSet<String> = records(&log_dir)
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() as u64 >= warm_answers as u64 + HELD);
    let lost = answered.iter().filter(|id| !recorded.contains(*id)).count();
    assert_eq!(lost, 0, "{lost} answered requests have no audit record");
    caf.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
