//! A witness URL that accepts connections and never answers does not hold
//! the broker's exit: at SIGTERM the last checkpoint is written to
//! `checkpoints.log`, the witness gets its short close timeout, and the
//! process exits within `server.shutdown_timeout_secs`.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "support/config_files.rs"]
mod config_files;

const SHUTDOWN_SECS: u64 = 5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A TCP listener that accepts every connection and never sends a byte: a
/// TLS handshake with it hangs until the client gives up.
struct SilentPeer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentPeer {
    fn start() -> SilentPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        held.push(stream);
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        SilentPeer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // One more connection wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The broker, killed if the test fails before it stops.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_hung_witness_url_does_not_hold_the_exit_past_the_shutdown_timeout() {
    let witness = SilentPeer::start();
    let dir = config_files::tempdir("witness-shutdown");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // An address, not `localhost`: the connection must reach the silent peer.
    let url = format!("https://127.0.0.1:{}/add-checkpoint", witness.port);
    let env: Vec<(String, String)> = [
        ("CAF_BROKER__SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("CAF_BROKER__SERVER__TLS", "false".into()),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off".into()),
        (
            "CAF_BROKER__SERVER__SHUTDOWN_TIMEOUT_SECS",
            SHUTDOWN_SECS.to_string(),
        ),
        (
            "CAF_BROKER__AUDIT__DIR",
            dir.join("audit").display().to_string(),
        ),
        ("CAF_BROKER__AUDIT__REPLICA_ID", "\"r1\"".into()),
        ("CAF_BROKER__AUDIT__CHECKPOINT_EVERY_RECORDS", "1".into()),
        ("CAF_BROKER__AUDIT__WITNESS_URL", url),
        (
            "CAF_BROKER__AUDIT__WITNESS_CA_FILE",
            "certs-dev/ca.pem".into(),
        ),
        // Each POST may hang a minute, three times: far past the shutdown timeout.
        ("CAF_BROKER__AUDIT__WITNESS_TIMEOUT_MS", "60000".into()),
        ("CAF_BROKER__ALERTS__OFF_HOURS", "\"\"".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut broker = KillOnDrop(config_files::spawn_quiet(&env));
    let token = config_files::agent_7_token(&env);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the broker did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..3 {
            let response = client
                .get(format!("{base}/v1/allocataires/1000002"))
                .bearer_auth(&token)
                .header("X-Purpose", "verification_radiation")
                .header("X-Case-Reference", "WITNESS-1")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                200,
                "a hung witness never fails a request"
            );
        }
    });
    // The witness thread is stuck in a handshake with the silent peer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while witness.accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the witness was never called");
        std::thread::sleep(Duration::from_millis(20));
    }

    let signalled = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", broker.0.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = signalled + Duration::from_secs(SHUTDOWN_SECS + 10);
    let exit = loop {
        if let Some(exit) = broker.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the broker still runs {:?} after SIGTERM",
            signalled.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert!(exit.success(), "the broker exited with {exit}");
    assert!(
        took <= Duration::from_secs(SHUTDOWN_SECS),
        "exit {took:?} after SIGTERM, past shutdown_timeout_secs = {SHUTDOWN_SECS}"
    );

    // Every record is covered by a signed checkpoint on the broker's own disk.
    let log = dir.join("audit").join("r1");
    let out = Command::new(env!("CARGO_BIN_EXE_caf-broker"))
        .current_dir(root())
        .args([
            "audit",
            "verify",
            "--public-key",
            "certs-dev/audit-checkpoint.pub.pem",
        ])
        .arg(&log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoints = std::fs::read(log.join("checkpoints.log")).unwrap();
    let (notes, _) = caf_broker::audit::split_checkpoints(&checkpoints);
    let newest = String::from_utf8_lossy(notes.last().unwrap());
    assert!(
        newest.starts_with("caf-broker.localhost/dev/r1\n3\n"),
        "{newest}"
    );
}
