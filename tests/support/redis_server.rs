//! A `redis-server` child process on a free loopback port, for tests that need
//! a real Redis. Without `redis-server` such a test fails, saying what to
//! install: it never passes without having run. [`RedisServer::start_tls`]
//! adds a TLS port (the development server certificate) and extra settings
//! such as ACL users.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    /// The TLS port, for a server from [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    /// Further `redis-server` arguments, kept for restarts.
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server; panics, saying what to install, when `redis-server`
    /// is not installed.
    pub fn start() -> Self {
        Self::start_with(None, &[])
    }

    /// A server that also speaks TLS on a second port, with the development
    /// server certificate (`localhost`, `127.0.0.1`), and the further
    /// `redis-server` arguments `args` (e.g. `--user ...`). The plain port
    /// stays, bound to loopback, so that readiness is checked without TLS.
    pub fn start_tls(args: &[&str]) -> Self {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
        let tls_port = free_port();
        let mut all: Vec<String> = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            certs.join("server.pem").display().to_string(),
            "--tls-key-file".into(),
            certs.join("server.key.pem").display().to_string(),
            "--tls-ca-cert-file".into(),
            certs.join("ca.pem").display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Self::start_with(Some(tls_port), &all)
    }

    fn start_with(tls_port: Option<u16>, args: &[String]) -> Self {
        if let Err(error) = Command::new("redis-server").arg("--version").output() {
            panic!(
                "this test needs a real Redis, and redis-server cannot be run ({error}): \
                 install it (apt-get install redis-server) or put it on PATH"
            );
        }
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("caf-broker-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            tls_port,
            args: args.to_vec(),
            dir,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server answers on its plain port: `PONG`, or a refusal to
    /// an unauthenticated client, which is an answer too.
    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
