//! Cost of one quota decision, local and Redis, and decisions per second under concurrency.
//!
//! `cargo bench --bench quota` (add `-- --quick` for a short run). The Redis
//! half starts its own `redis-server` on a free loopback port and is skipped
//! with a message when the binary is not installed. Limits are set high so
//! that every decision does the full work (daily checks, both GCRAs, counts)
//! for one agent of each post.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caf_broker::clock::SystemClock;
use caf_broker::domain::{Agent, PostCode, Subject};
use caf_broker::quota::{self, Backend, Limits, Quota, QuotaSettings, RedisFailure};
use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use tokio::runtime::Runtime;

const POSTS: usize = 64;
const CONCURRENCY: [usize; 2] = [1, 32];

/// A `redis-server` child on a free loopback port, killed when dropped.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl RedisServer {
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("redis benchmarks skipped: redis-server is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("caf-broker-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers_ping() {
            if Instant::now() > deadline {
                eprintln!("redis benchmarks skipped: redis-server did not answer PING");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(backend: Backend, redis_url: Option<String>) -> QuotaSettings {
    QuotaSettings {
        backend,
        redis_url,
        time_zone: "Europe/Paris".to_owned(),
        on_redis_failure: RedisFailure::Local,
        redis_timeout_ms: 1000,
        default: Limits {
            per_second: 1_000_000,
            burst: 1_000_000,
            per_day: 1_000_000_000_000,
        },
        posts: Default::default(),
        agent_error_budget: Default::default(),
        known_posts_only: false,
        agent_default: Limits {
            per_second: 1_000_000,
            burst: 1_000_000,
            per_day: 1_000_000_000_000,
        },
        agents: Default::default(),
        redis_ca_file: None,
        redis_username: None,
        redis_password_file: None,
        replicas_hint: 1,
    }
}

/// One agent in each post.
fn posts() -> Arc<Vec<(PostCode, Subject)>> {
    Arc::new(
        (0..POSTS)
            .filter_map(|i| {
                let post = PostCode::parse(&format!("XX-POST{i}")).ok()?;
                let sub = Subject::parse(&format!("agent-{i}")).ok()?;
                Some((post, sub))
            })
            .collect(),
    )
}

/// One decision at a time, then `n` tasks deciding concurrently; criterion
/// reports the time per decision and decisions per second.
fn bench_backend(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    quota: Arc<dyn Quota>,
) {
    let posts = posts();
    for tasks in CONCURRENCY {
        let quota = quota.clone();
        let posts = posts.clone();
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/{tasks}-tasks"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let per_task = iters.div_ceil(tasks as u64);
                    let start = Instant::now();
                    let handles: Vec<_> = (0..tasks)
                        .map(|t| {
                            let quota = quota.clone();
                            let posts = posts.clone();
                            tokio::spawn(async move {
                                for i in 0..per_task {
                                    let (post, sub) = &posts[(t + i as usize) % posts.len()];
                                    black_box(quota.acquire(Agent { post, sub }).await);
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        let _ = handle.await;
                    }
                    // Per decision: total time over the decisions made.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_task * tasks as u64) as f64)
                })
            });
        });
    }
}

fn quota_decisions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("quota");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    let local = runtime
        .block_on(quota::build(
            &settings(Backend::Local, None),
            Arc::new(SystemClock),
        ))
        .expect("the local quota");
    bench_backend(&mut group, &runtime, "local", local);

    if let Some(server) = RedisServer::start() {
        let url = format!("redis://127.0.0.1:{}/0", server.port);
        let redis = runtime
            .block_on(quota::build(
                &settings(Backend::Redis, Some(url)),
                Arc::new(SystemClock),
            ))
            .expect("the redis quota");
        bench_backend(&mut group, &runtime, "redis", redis);
        drop(server);
    }
    group.finish();
}

criterion_group!(benches, quota_decisions);
criterion_main!(benches);
