#!/usr/bin/env python3
"""The soak test and the memory run of the broker, against the real binary.

Started by benches/soak/run.sh (which builds the binary); this file starts
redis-server (soak), `caf-broker simulate` and `caf-broker serve`, drives the
traffic, samples the broker's resident memory, stops everything and checks the
audit log and the quotas. Python standard library only; loopback only; every
loop is bounded in count and time.

  soak    mixed traffic at a steady rate (cache hits, misses, not found,
          400, 403, 429 of a greedy agent and of a post's daily quota, the
          error budget of a scanning agent, NIR searches; four posts, several
          agents and two roles), a policy reload and a JWKS rotation in the
          middle; per-minute latency percentiles and resident memory.
  memory  1,000,000 distinct dossiers (found and not found, by numéro and by
          NIR) at full rate, cache.max_bytes = 64 MiB: the resident size must
          stay under cache.max_bytes + 64 MiB.

Exits 1 when a check fails, 2 when the run could not be made.
"""

import argparse
import base64
import bisect
import hashlib
import http.client
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIB = 1024 * 1024

# The simulator's fixed dossiers (docs/record.md) and their NIRs.
FIXED = ["1000001", "1000002", "1000003", "1000004", "1000005"]
FIXED_NIRS = ["180057512345627", "295109912611193", "253072A07300443", "253072B07300470",
              "160019912345604"]
FIRST_GENERATED = 2_000_000
# The outcomes of an access record whose request passed the quotas.
ADMITTED = {"released", "not_found", "upstream_error", "internal_error"}


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nir_with_key(first13):
    """A NIR with a valid key (97 - first 13 digits mod 97)."""
    return first13 + f"{97 - int(first13) % 97:02d}"


def unknown_nir(rng):
    """A well-formed NIR no dossier has (the simulator's NIRs start with 1 or 2; 7 is
    the code of a temporary number, which it never draws)."""
    return nir_with_key("7" + "".join(rng.choice("0123456789") for _ in range(12)))


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rss_kib(pid):
    """VmRSS, VmHWM and RssAnon (the heap and stacks, without the mapped
    binary) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0), values.get("RssAnon", 0)


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


# ---- processes -------------------------------------------------------------


class Processes:
    """The servers started here, stopped (by their own pid) at the end."""

    def __init__(self, work):
        self.work = work
        self.children = []

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.work, f"{name}.log"), "wb")
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.children.append((name, child))
        return child

    def stop(self, child, timeout=30):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        return child.returncode

    def stop_all(self):
        for _, child in reversed(self.children):
            if child.poll() is None:
                self.stop(child, 10)


def wait_http(port, path, deadline_secs=30, process=None):
    deadline = time.monotonic() + deadline_secs
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the process serving port {port} exited ({process.returncode})")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"no answer on 127.0.0.1:{port}{path} within {deadline_secs} s")


# ---- the world: config, keys, agents ---------------------------------------


class World:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.bin = args.bin
        self.sim_bin = args.sim_bin or args.bin
        self.audit_dir = os.path.join(work, "audit")
        self.policy_file = os.path.join(work, "policy.toml")
        self.jwks_file = os.path.join(work, "jwks.json")
        self.config_file = os.path.join(work, "broker.toml")
        self.port = free_port()
        self.sim_port = free_port()
        self.redis_port = free_port()
        shutil.copy(os.path.join(ROOT, "config/policy.toml"), self.policy_file)
        with open(os.path.join(ROOT, "certs-dev/jwks.json")) as f:
            self.dev_jwks = json.load(f)
        # The key set served at start: the development keys.
        self.write_jwks(self.dev_jwks["keys"])
        self.limits = {}  # ("post", P) or ("agent", P, S) -> (per_second, burst, per_day)

    def write_jwks(self, keys):
        temporary = self.jwks_file + ".tmp"
        with open(temporary, "w") as f:
            json.dump({"keys": keys}, f)
        os.replace(temporary, self.jwks_file)

    def new_signing_key(self, kid):
        """A fresh Ed25519 key (openssl) and its JWK."""
        key_file = os.path.join(self.work, f"{kid}.key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key_file],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", key_file, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(der[-32:]), "kid": kid,
               "alg": "EdDSA", "use": "sig"}
        return key_file, jwk

    def env(self, **extra):
        a = self.args
        env = dict(os.environ)
        env.update({
            "CAF_BROKER__SERVER__LISTEN": f"127.0.0.1:{self.port}",
            "CAF_BROKER__SERVER__TLS": "false",
            "CAF_BROKER__SERVER__CLIENT_AUTH": "off",
            "CAF_BROKER__AUTH__JWKS_FILE": self.jwks_file,
            "CAF_BROKER__POLICY__FILE": self.policy_file,
            "CAF_BROKER__UPSTREAM__KIND": "http",
            "CAF_BROKER__UPSTREAM__URL": f"http://127.0.0.1:{self.sim_port}",
            "CAF_BROKER__CACHE__MAX_BYTES": str(a.cache_max_bytes),
            "CAF_BROKER__CACHE__TTL_SECS": str(a.cache_ttl_secs),
            "CAF_BROKER__CACHE__NOT_FOUND_TTL_SECS": str(a.cache_ttl_secs),
            "CAF_BROKER__AUDIT__DIR": self.audit_dir,
            "CAF_BROKER__AUDIT__REPLICA_ID": "soak-1",
            "CAF_BROKER__TELEMETRY__LOG_LEVEL": a.log_level,
            "CAF_BROKER__TELEMETRY__LOG_FORMAT": "json",
            "NO_COLOR": "1",
        })
        if a.mode == "soak":
            env["CAF_BROKER__QUOTAS__BACKEND"] = "redis"
            env["CAF_BROKER__QUOTAS__REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        env.update(extra)
        return env

    def write_config(self, posts, agents):
        """config/broker.toml with this run's per-post and per-agent quotas; every
        other setting comes from the environment (World.env)."""
        with open(os.path.join(ROOT, "config/broker.toml")) as f:
            base = f.read()
        q = self.args
        lines = [base, "\n# ---- added by benches/soak ----\n"]
        default_post = (q.post_per_second, q.post_burst, q.post_per_day)
        default_agent = (q.agent_per_second, q.agent_burst, q.agent_per_day)
        base = base.replace(
            "default = { per_second = 5, burst = 20, per_day = 2000 }",
            "default = { per_second = %d, burst = %d, per_day = %d }" % default_post)
        base = base.replace(
            "agent_default = { per_second = 2, burst = 10, per_day = 500 }",
            "agent_default = { per_second = %d, burst = %d, per_day = %d }\n"
            "agent_error_budget = { per_second = %d, burst = %d }" % (
                default_agent + (q.error_budget_per_second, q.error_budget_burst)))
        if "agent_error_budget = { per_second = %d" % q.error_budget_per_second not in base:
            raise SystemExit("config/broker.toml changed: benches/soak cannot set the quotas")
        lines[0] = base
        for post, limits in posts.items():
            self.limits[("post", post)] = limits or default_post
            if limits:
                lines.append(f"[quotas.posts.{post}]\nper_second = {limits[0]}\n"
                             f"burst = {limits[1]}\nper_day = {limits[2]}\n")
        for (post, sub), limits in agents.items():
            self.limits[("agent", post, sub)] = limits or default_agent
            if limits:
                lines.append(f'[quotas.agents."{post}/{sub}"]\nper_second = {limits[0]}\n'
                             f"burst = {limits[1]}\nper_day = {limits[2]}\n")
        with open(self.config_file, "w") as f:
            f.write("\n".join(lines))

    def token(self, post, role, sub, extra_env=None):
        ttl = min(12 * 3600 - 60, int(self.args.minutes * 60 + 1800))
        result = subprocess.run(
            [self.bin, "--config", self.config_file, "token", "--post", post, "--role", role,
             "--sub", sub, "--ttl-secs", str(ttl)],
            env=self.env(**(extra_env or {})), cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"token: {result.stderr.strip()}")
        return result.stdout.strip()


# ---- the client --------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to the broker."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def send(self, method, path, headers, body=None):
        """(status, headers dict, body bytes) or (0, {}, error) after a failure."""
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                found = {k.lower(): v for k, v in response.getheaders()}
                if found.get("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, found, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # A keep-alive connection the server closed between requests:
                # retry once on a new one (nothing was answered on the old one).
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    return 0, {}, repr(e).encode()
            except OSError as e:
                self.conn.close()
                self.conn = None
                return 0, {}, repr(e).encode()
        return 0, {}, b"unreachable"


def data_request(kind, numero=None, nir=None, purpose="verification_radiation", token=""):
    headers = {"Authorization": "Bearer " + token, "X-Purpose": purpose,
               "X-Case-Reference": "SOAK/" + kind}
    if nir is not None:
        headers["Content-Type"] = "application/json"
        return "POST", "/v1/allocataires/recherche", headers, json.dumps({"nir": nir}).encode()
    return "GET", f"/v1/allocataires/{numero}", headers, None


# One answered request: (send time (epoch), latency s, stream, post, sub, status,
# request id, problem code or limit, policy version of a 200, cache of a 200, token era)
def record_answer(results, lock, start, latency, stream, agent, status, headers, body, era,
                  parse_body=True):
    rid = headers.get("x-request-id", "")
    code = ""
    version = ""
    cache = ""
    if status == 200:
        version = headers.get("x-policy-version", "")
        if parse_body:
            try:
                cache = json.loads(body)["meta"]["cache"]
            except (ValueError, KeyError):
                code = "unreadable-200"
    elif status:
        try:
            problem = json.loads(body)
            code = problem.get("code", "")
            if problem.get("limit"):
                code += ":" + problem["limit"]
        except ValueError:
            code = "not-a-problem"
    else:
        code = body.decode(errors="replace")[:80]
    with lock:
        results.append((start, latency, stream, agent[0], agent[1], status, rid, code, version,
                        cache, era))


# ---- the soak ---------------------------------------------------------------


def soak_population(args):
    posts = ["TN-TUNIS", "MA-RABAT", "SN-DAKAR", "DZ-ALGER"]
    agents = []
    for post in posts:
        for i in range(args.agents_per_post):
            agents.append((post, f"agent-{i + 1}", "agent_consulaire"))
        agents.append((post, "social-1", "assistant_social"))
    greedy = ("MA-RABAT", "greedy", "agent_consulaire")
    scanner = ("DZ-ALGER", "scanner", "agent_consulaire")
    return posts, agents, greedy, scanner


def soak_streams(args):
    """(name, requests per second, expected statuses); 429 is always possible."""
    rate = args.rate
    greedy = 3.0
    scanner = max(8.0, 0.05 * rate)
    rest = rate - greedy - scanner
    if rest <= 0:
        raise SystemExit("--rate must be above 11 requests per second")
    shares = [("hit", 0.40, {200}), ("miss", 0.20, {200}), ("not_found", 0.08, {404}),
              ("nir", 0.08, {200}), ("nir_not_found", 0.04, {404}), ("bad_numero", 0.03, {400}),
              ("bad_nir", 0.02, {400}), ("unknown_purpose", 0.02, {400}),
              ("forbidden_purpose", 0.05, {403}), ("social", 0.08, {200, 404})]
    streams = [(name, rest * share, expected) for name, share, expected in shares]
    streams.append(("greedy", greedy, {200}))
    streams.append(("scanner", scanner, {404}))
    return streams


def soak_request(stream, rng, args, tokens, agents, greedy, scanner):
    """(agent, method, path, headers, body)."""
    records = args.records
    if stream == "greedy":
        agent = greedy
    elif stream == "scanner":
        agent = scanner
    elif stream == "social":
        agent = rng.choice([a for a in agents if a[2] == "assistant_social"])
    else:
        agent = rng.choice([a for a in agents if a[2] == "agent_consulaire"])
    token = tokens[(agent[0], agent[1])]
    if stream == "hit":
        numero = rng.choice(FIXED + [str(FIRST_GENERATED + i) for i in range(100)])
        return agent, data_request(stream, numero=numero, token=token)
    if stream in ("miss", "greedy"):
        numero = str(FIRST_GENERATED + 100 + rng.randrange(records - 100))
        return agent, data_request(stream, numero=numero, token=token)
    if stream in ("not_found", "scanner"):
        numero = str(FIRST_GENERATED + records + rng.randrange(9_999_999 - FIRST_GENERATED - records))
        return agent, data_request(stream, numero=numero, token=token)
    if stream == "nir":
        return agent, data_request(stream, nir=rng.choice(FIXED_NIRS), purpose="controle_fraude",
                                   token=token)
    if stream == "nir_not_found":
        return agent, data_request(stream, nir=unknown_nir(rng), purpose="controle_fraude",
                                   token=token)
    if stream == "bad_numero":
        return agent, data_request(stream, numero="0" + str(FIRST_GENERATED + rng.randrange(records)),
                                   token=token)
    if stream == "bad_nir":
        nir = rng.choice(FIXED_NIRS)
        nir = nir[:13] + f"{(int(nir[13:]) + 1) % 100:02d}"
        return agent, data_request(stream, nir=nir, purpose="controle_fraude", token=token)
    if stream == "unknown_purpose":
        return agent, data_request(stream, numero=rng.choice(FIXED), purpose="curiosite",
                                   token=token)
    if stream == "forbidden_purpose":
        return agent, data_request(stream, numero=rng.choice(FIXED),
                                   purpose="accompagnement_social", token=token)
    if stream == "social":
        numero = rng.choice(FIXED + [str(FIRST_GENERATED + rng.randrange(records))])
        return agent, data_request(stream, numero=numero, purpose="accompagnement_social",
                                   token=token)
    raise ValueError(stream)


def readyz(port):
    client = Client(port)
    status, _, body = client.send("GET", "/readyz", {})
    if client.conn:
        client.conn.close()
    return status, (json.loads(body) if status else {})


def soak_config(args, world):
    """Writes the soak's configuration; returns its population and streams."""
    posts, agents, greedy, scanner = soak_population(args)
    streams = soak_streams(args)
    duration = args.minutes * 60
    # SN-DAKAR's daily quota is spent at about 60% of the run: every admitted
    # request of that post is counted against it.
    dakar_share = sum(rate for name, rate, _ in streams if name not in ("greedy", "scanner")) / 4
    dakar_admitted_per_sec = dakar_share * (0.40 + 0.20 + 0.08 + 0.08 + 0.04 + 0.08) / (
        0.40 + 0.20 + 0.08 + 0.08 + 0.04 + 0.03 + 0.02 + 0.02 + 0.05 + 0.08)
    dakar_per_day = max(50, int(0.6 * duration * dakar_admitted_per_sec))
    world.write_config(
        {p: ((args.post_per_second, args.post_burst, dakar_per_day) if p == "SN-DAKAR" else None)
         for p in posts},
        {**{(a[0], a[1]): None for a in agents + [scanner]},
         (greedy[0], greedy[1]): (1, 3, 1_000_000)})
    return posts, agents, greedy, scanner, streams, dakar_per_day


def memory_config(args, world):
    posts = ["MEM-A", "MEM-B"]
    agents = [(p, f"agent-{i + 1}", "agent_consulaire") for p in posts for i in range(4)]
    limited = ("MEM-B", "limited", "agent_consulaire")
    world.write_config({p: None for p in posts},
                       {**{(a[0], a[1]): None for a in agents},
                        (limited[0], limited[1]): (100_000, 100_000, args.limited_per_day)})
    return agents, limited


def run_soak(args, world, procs):
    posts, agents, greedy, scanner, streams, dakar_per_day = soak_config(args, world)
    duration = args.minutes * 60

    redis = procs.start("redis", ["redis-server", "--port", str(world.redis_port), "--bind",
                                  "127.0.0.1", "--save", "", "--appendonly", "no"])
    sim = procs.start("simulate", [world.sim_bin, "simulate", "--listen",
                                   f"127.0.0.1:{world.sim_port}", "--records", str(args.records)])
    wait_http(world.sim_port, "/dossiers/1000002", process=sim)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(world.redis_port), "ping"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    broker = procs.start("broker", [world.bin, "--config", world.config_file, "serve"],
                         env=world.env())
    wait_http(world.port, "/healthz", process=broker)
    _, ready = readyz(world.port)
    old_version = ready["checks"]["policy"]["version"]

    tokens = {}
    for a in agents + [greedy, scanner]:
        tokens[(a[0], a[1])] = world.token(a[0], a[2], a[1])
    old_tokens = dict(tokens)
    log(f"soak: {len(tokens)} agents, {args.rate} requests/s for {args.minutes} min, broker pid {broker.pid}")

    results = []
    lock = threading.Lock()
    jobs = queue.Queue(maxsize=10_000)
    stop = threading.Event()
    era = {"value": "old"}  # which tokens the traffic uses: old, both, new
    events = []  # (time, what)

    def worker():
        client = Client(world.port)
        while True:
            job = jobs.get()
            if job is None:
                return
            stream, agent, (method, path, headers, body), job_era = job
            start = time.time()
            t0 = time.perf_counter()
            status, found, data = client.send(method, path, headers, body)
            record_answer(results, lock, start, time.perf_counter() - t0, stream, agent, status,
                          found, data, job_era)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for w in workers:
        w.start()

    samples = []  # (seconds since start, VmRSS KiB, VmHWM KiB)
    t_start = time.time()

    def sampler():
        while not stop.is_set():
            try:
                rss, hwm, anon = rss_kib(broker.pid)
            except OSError:
                return
            samples.append((time.time() - t_start, rss, hwm, anon))
            stop.wait(args.sample_secs)

    threading.Thread(target=sampler, daemon=True).start()

    # The events of the middle of the run.
    new_key_file, new_jwk = world.new_signing_key("soak-rotated")
    new_key_env = {"CAF_BROKER__AUTH__DEV_SIGNING_KEY_FILE": new_key_file,
                   "CAF_BROKER__AUTH__DEV_SIGNING_KID": "soak-rotated"}
    checks = {}

    def policy_reload():
        with open(world.policy_file) as f:
            text = f.read()
        edited = text.replace('description = "Check that CAF benefits really stopped',
                              'description = "Check (soak revision) that CAF benefits really stopped', 1)
        if edited == text:
            raise SystemExit("config/policy.toml changed: benches/soak cannot edit it")
        checks["policy_edited_at"] = time.time()
        with open(world.policy_file + ".tmp", "w") as f:
            f.write(edited)
        os.replace(world.policy_file + ".tmp", world.policy_file)
        broker.send_signal(signal.SIGHUP)
        expected = "sha256:" + hashlib.sha256(edited.encode()).hexdigest()
        deadline = time.time() + 15
        while time.time() < deadline:
            _, ready = readyz(world.port)
            if ready["checks"]["policy"]["version"] == expected:
                events.append((time.time(), "policy reloaded"))
                checks["policy_new_version"] = expected
                checks["policy_reloads"] = ready["checks"]["policy"]["reloads"]
                return
            time.sleep(0.1)
        checks["policy_reload_failed"] = True

    def probe(token):
        """One lookup with this token, recorded with the traffic's answers."""
        client = Client(world.port)
        agent = agents[0]
        start = time.time()
        t0 = time.perf_counter()
        status, found, data = client.send(*data_request("probe", numero="1000001", token=token))
        record_answer(results, lock, start, time.perf_counter() - t0, "probe", agent, status,
                      found, data, "probe")
        if client.conn:
            client.conn.close()
        return status

    def rotation_add():
        world.write_jwks(world.dev_jwks["keys"] + [new_jwk])
        broker.send_signal(signal.SIGHUP)
        time.sleep(1)
        for a in agents + [greedy, scanner]:
            tokens[(a[0], a[1])] = world.token(a[0], a[2], a[1], new_key_env)
        new_tokens.update(tokens)
        events.append((time.time(), "JWKS: rotated key added, new tokens in use"))
        era["value"] = "new"

    new_tokens = {}

    def rotation_withdraw():
        world.write_jwks([k for k in world.dev_jwks["keys"] if k["kid"] != "dev-2026"] + [new_jwk])
        broker.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        old = old_tokens[(agents[0][0], agents[0][1])]
        while time.time() < deadline:
            if probe(old) == 401:
                events.append((time.time(), "JWKS: old key withdrawn, old tokens refused"))
                checks["withdrawn_at"] = time.time()
                era["value"] = "withdrawn"
                return
            time.sleep(0.1)
        checks["withdraw_failed"] = True

    schedule = [(0.45 * duration, policy_reload), (0.55 * duration, rotation_add),
                (0.65 * duration, rotation_withdraw)]

    def events_thread():
        for at, action in schedule:
            while not stop.is_set() and time.time() - t_start < at:
                stop.wait(0.2)
            if stop.is_set():
                return
            log(f"event: {action.__name__}")
            action()

    threading.Thread(target=events_thread, daemon=True).start()

    # The dispatcher: one request every 1/rate s, on schedule (bounded count and time).
    rng = random.Random(args.seed)
    names = [s[0] for s in streams]
    weights = [s[1] for s in streams]
    interval = 1.0 / args.rate
    total = int(duration * args.rate)
    late = 0
    next_minute_log = 60
    for n in range(total):
        at = t_start + n * interval
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            late += 1
        if broker.poll() is not None:
            log("the broker exited during the run")
            break
        stream = rng.choices(names, weights)[0]
        current = era["value"]
        agent, request = soak_request(stream, rng, args, tokens, agents, greedy, scanner)
        # After the withdrawal, 1% of the requests still come with an old token:
        # each must be refused.
        if current == "withdrawn" and rng.random() < 0.01:
            method, path, headers, body = request
            headers = dict(headers, Authorization="Bearer " + old_tokens[(agent[0], agent[1])])
            request = (method, path, headers, body)
            current = "stale"
        jobs.put((stream, agent, request, current))
        if time.time() - t_start >= next_minute_log:
            with lock:
                done = len(results)
            log(f"minute {int(next_minute_log // 60)}: {done} answers, rss "
                f"{samples[-1][1] / 1024:.1f} MiB" if samples else "")
            next_minute_log += 60
    for _ in workers:
        jobs.put(None)
    for w in workers:
        w.join(60)
    stop.set()
    elapsed = time.time() - t_start
    # The last samples before the broker stops.
    samples.append((elapsed,) + rss_kib(broker.pid))
    log("stopping the broker (SIGTERM)")
    code = procs.stop(broker, 30)
    procs.stop(sim)
    procs.stop(redis)
    return {"results": results, "samples": samples, "events": [(t - t_start, w) for t, w in events],
            "checks": checks, "old_version": old_version, "elapsed": elapsed, "late": late,
            "broker_exit": code, "t_start": t_start, "streams": streams, "posts": posts,
            "dakar_per_day": dakar_per_day}


# ---- the memory run ---------------------------------------------------------


def memory_jobs(args):
    """Every lookup of the run: (stream, numero or None, nir or None), shuffled."""
    rng = random.Random(args.seed)
    found = args.found
    nir_missing = args.lookups // 10
    numero_missing = args.lookups - found - nir_missing
    numeros = [str(FIRST_GENERATED + i) for i in range(found)]
    # Not found: numéros past the simulator's dossiers (distinct), and NIRs no dossier has.
    missing = rng.sample(range(FIRST_GENERATED + found, 9_999_999), numero_missing)
    nirs = set()
    while len(nirs) < nir_missing:
        nirs.add(unknown_nir(rng))
    jobs = [("found", n, None) for n in numeros]
    jobs += [("not_found", str(n), None) for n in missing]
    jobs += [("nir_not_found", None, n) for n in sorted(nirs)]
    rng.shuffle(jobs)
    return jobs


def run_memory(args, world, procs):
    agents, limited = memory_config(args, world)
    sim = procs.start("simulate", [world.sim_bin, "simulate", "--listen",
                                   f"127.0.0.1:{world.sim_port}", "--records", str(args.found)])
    wait_http(world.sim_port, "/dossiers/1000002", deadline_secs=300, process=sim)
    broker = procs.start("broker", [world.bin, "--config", world.config_file, "serve"],
                         env=world.env())
    wait_http(world.port, "/healthz", process=broker)
    tokens = {(a[0], a[1]): world.token(a[0], a[2], a[1]) for a in agents + [limited]}
    jobs = memory_jobs(args)
    # The limited agent looks up the five fixed dossiers over and over, past its daily quota.
    extra = [("limited", FIXED[i % 5], None) for i in range(args.limited_requests)]
    random.Random(args.seed + 1).shuffle(extra)
    log(f"memory: {len(jobs)} distinct lookups + {len(extra)} of a daily-limited agent, "
        f"{args.connections} connections, broker pid {broker.pid}")

    work = queue.Queue()
    # Interleave the limited agent's requests through the run.
    step = max(1, len(jobs) // max(1, len(extra)))
    merged = []
    for i, job in enumerate(jobs):
        merged.append(job)
        if i % step == 0 and extra:
            merged.append(extra.pop())
    merged += extra
    for i, job in enumerate(merged):
        work.put((i, job))
    results = []
    lock = threading.Lock()
    stop = threading.Event()
    samples = []
    t_start = time.time()
    deadline = t_start + args.max_minutes * 60

    def worker():
        client = Client(world.port)
        while time.time() < deadline:
            try:
                i, (stream, numero, nir) = work.get_nowait()
            except queue.Empty:
                return
            agent = limited if stream == "limited" else agents[i % len(agents)]
            token = tokens[(agent[0], agent[1])]
            purpose = "controle_fraude" if nir else "verification_radiation"
            method, path, headers, body = data_request(stream, numero=numero, nir=nir,
                                                       purpose=purpose, token=token)
            start = time.time()
            t0 = time.perf_counter()
            status, found, data = client.send(method, path, headers, body)
            record_answer(results, lock, start, time.perf_counter() - t0, stream, agent, status,
                          found, data, "old", parse_body=False)

    def sampler():
        while not stop.is_set():
            try:
                rss, hwm, anon = rss_kib(broker.pid)
            except OSError:
                return
            samples.append((time.time() - t_start, rss, hwm, anon))
            stop.wait(args.sample_secs)

    threading.Thread(target=sampler, daemon=True).start()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for t in threads:
        t.start()
    ticks = 0
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        ticks += 1
        if ticks % 6 == 0:
            with lock:
                done = len(results)
            log(f"{done} answers, rss {samples[-1][1] / 1024:.1f} MiB" if samples else "")
        if broker.poll() is not None:
            log("the broker exited during the run")
            break
    stop.set()
    elapsed = time.time() - t_start
    samples.append((elapsed,) + rss_kib(broker.pid))
    cache_entries = metric(world.port, "caf_broker_cache")
    log("stopping the broker (SIGTERM)")
    code = procs.stop(broker, 60)
    procs.stop(sim)
    return {"results": results, "samples": samples, "events": [], "checks": {},
            "elapsed": elapsed, "broker_exit": code, "t_start": t_start, "late": 0,
            "unfinished": work.qsize(), "cache_metrics": cache_entries}


def metric(port, prefix):
    client = Client(port)
    status, _, body = client.send("GET", "/metrics", {})
    if client.conn:
        client.conn.close()
    if status != 200:
        return []
    return [line for line in body.decode().splitlines() if line.startswith(prefix)]


# ---- reports and checks -----------------------------------------------------


def report_minutes(run):
    """Per-minute latency percentiles and resident memory; returns the table's rows."""
    by_minute = defaultdict(list)
    statuses = defaultdict(Counter)
    t0 = run["t_start"]
    for r in run["results"]:
        minute = int((r[0] - t0) // 60)
        if r[5]:
            by_minute[minute].append(r[1])
        statuses[minute][r[5]] += 1
    samples = run["samples"]
    print("\n| minute | answers | req/s | p50 ms | p90 ms | p99 ms | max ms | RSS MiB (end of minute) | statuses |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for minute in sorted(by_minute):
        values = sorted(by_minute[minute])
        in_minute = [s for s in samples if s[0] < (minute + 1) * 60]
        rss = in_minute[-1][1] / 1024 if in_minute else float("nan")
        status_text = " ".join(f"{k}:{v}" for k, v in sorted(statuses[minute].items()))
        row = (minute + 1, len(values), len(values) / 60, percentile(values, 50) * 1e3,
               percentile(values, 90) * 1e3, percentile(values, 99) * 1e3, values[-1] * 1e3, rss)
        rows.append(row)
        print("| %d | %d | %.0f | %.1f | %.1f | %.1f | %.0f | %.1f | %s |" % (row + (status_text,)))
    return rows


def check_memory_flat(run, args, failures):
    samples = run["samples"]
    warmup = args.warmup_minutes * 60
    after = [s for s in samples if s[0] >= warmup]
    if len(after) < 2:
        print("\nresident memory: too few samples after the warm-up to judge")
        return
    first, last = after[0], after[-1]
    n = len(after)
    mean_t = sum(s[0] for s in after) / n
    mean_r = sum(s[1] for s in after) / n
    var = sum((s[0] - mean_t) ** 2 for s in after)
    slope = sum((s[0] - mean_t) * (s[1] - mean_r) for s in after) / var if var else 0.0
    slope_mib_h = slope * 3600 / 1024
    growth = (last[1] - first[1]) / 1024
    peak = max(s[1] for s in samples) / 1024
    print(f"\nresident memory (VmRSS, sampled every {args.sample_secs} s): "
          f"{samples[0][1] / 1024:.1f} MiB at start, "
          f"{first[1] / 1024:.1f} MiB first after the {args.warmup_minutes} min warm-up "
          f"(t={first[0]:.0f} s), {last[1] / 1024:.1f} MiB last (t={last[0]:.0f} s): "
          f"{growth:+.1f} MiB; slope {slope_mib_h:+.2f} MiB/hour; peak {peak:.1f} MiB, "
          f"VmHWM {samples[-1][2] / 1024:.1f} MiB")
    if growth > args.max_rss_growth_mib:
        failures.append(f"resident memory grew by {growth:.1f} MiB after the warm-up "
                        f"(more than {args.max_rss_growth_mib} MiB)")


def read_audit(audit_dir):
    access = []
    summaries = []
    alerts = 0
    for dirpath, _, files in os.walk(audit_dir):
        for name in sorted(files):
            if not name.startswith("audit-") or ".jsonl" not in name:
                continue
            with open(os.path.join(dirpath, name)) as f:
                for line in f:
                    record = json.loads(line)
                    kind = record.get("kind")
                    if kind is None:
                        access.append(record)
                    elif kind == "refusals_summary":
                        summaries.append(record)
                    elif kind == "alert":
                        alerts += 1
    return access, summaries, alerts


def local_day(record_time, tz):
    t = datetime.fromisoformat(record_time.replace("Z", "+00:00"))
    return t.astimezone(tz).date().isoformat(), t.timestamp()


def gcra_excess(times, per_second):
    """The largest n - per_second x span over the windows of sorted times: at
    most the burst for a sequence a GCRA admitted."""
    best = 0.0
    low = float("inf")
    for i, t in enumerate(times):
        low = min(low, i - per_second * t)
        best = max(best, (i - per_second * t) - low + 1)
    return best


def quota_outages(broker_log):
    """The windows (epoch seconds, widened by 1 s) in which the Redis quota
    backend did not answer, from the broker's JSON log."""
    windows = []
    start = None
    if not os.path.exists(broker_log):
        return windows
    with open(broker_log) as f:
        for line in f:
            if "caf_broker::quota::fallback" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            t = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            if event["level"] == "WARN" and start is None:
                start = t
            elif event["level"] == "INFO" and start is not None:
                windows.append((start - 1, t + 1))
                start = None
    if start is not None:
        windows.append((start - 1, float("inf")))
    return windows


def check_answers_recorded(results, access, by_id, duplicates, summaries, alerts, failures):
    """Every answered data request in the audit log exactly once, with its
    status, but those no record is promised for: a 401 (no valid token) and
    the error budget's 429 (summed up per agent and minute instead)."""
    answered = [r for r in results if r[5] and r[5] != 401 and not r[7].endswith(":agent-error-budget")]
    missing = 0
    mismatched = 0
    client_ids = set()
    for r in answered:
        client_ids.add(r[6])
        found = by_id.get(r[6], [])
        if len(found) != 1:
            missing += 1
        elif found[0]["status"] != r[5]:
            mismatched += 1
    unanswered = sum(1 for rid in by_id if rid not in client_ids)
    budget_client = Counter((r[3], r[4]) for r in results if r[7].endswith(":agent-error-budget"))
    budget_audit = Counter()
    for s in summaries:
        for status, count in s.get("figures", {}).items():
            if status.isdigit():
                budget_audit[(s["post"], s["sub"])] += count
    print(f"audit log: {len(access)} access records, {len(summaries)} refusal summaries, "
          f"{alerts} alerts; {len(answered)} answered data requests to find: "
          f"{len(answered) - missing} found exactly once, {missing} missing or repeated, "
          f"{mismatched} with another status; {duplicates} request ids recorded twice; "
          f"{unanswered} records of requests the client got no answer to")
    print(f"error budget: {sum(budget_client.values())} refusals answered, "
          f"{sum(budget_audit.values())} counted in the summaries")
    if missing or mismatched or duplicates:
        failures.append(f"audit: {missing} answered requests not recorded exactly once, "
                        f"{mismatched} with another status, {duplicates} duplicated ids")
    if unanswered and not any(r[5] == 0 for r in results):
        failures.append(f"audit: {unanswered} records of requests nobody was answered")
    if budget_client != budget_audit:
        failures.append(f"error budget: answered {dict(budget_client)} but summed up "
                        f"{dict(budget_audit)}")


def check_audit_and_quotas(run, world, args, failures):
    results = run["results"]
    verify = subprocess.run(
        [world.bin, "--config", world.config_file, "audit", "verify", "--public-key",
         os.path.join(ROOT, "certs-dev/audit-checkpoint.pub.pem"), world.audit_dir],
        env=world.env(), cwd=ROOT, capture_output=True, text=True)
    print(f"\n`caf-broker audit verify --public-key ...`: exit {verify.returncode}: "
          f"{(verify.stdout + verify.stderr).strip().splitlines()[-1] if (verify.stdout + verify.stderr).strip() else ''}")
    if verify.returncode != 0:
        failures.append("audit verify failed: " + (verify.stdout + verify.stderr).strip()[-400:])

    access, summaries, alerts = read_audit(world.audit_dir)
    by_id = defaultdict(list)
    for record in access:
        by_id[record["request_id"]].append(record)
    duplicates = sum(1 for v in by_id.values() if len(v) > 1)

    if results is None:
        # A check of a kept run: its answers are gone; the log and the quotas remain.
        print(f"audit log: {len(access)} access records, {len(summaries)} refusal summaries, "
              f"{alerts} alerts; {duplicates} request ids recorded twice "
              "(the answers of a run checked again are not kept)")
        if duplicates:
            failures.append(f"audit: {duplicates} duplicated request ids")
    else:
        check_answers_recorded(results, access, by_id, duplicates, summaries, alerts, failures)

    # Quotas: every admitted request (its record's outcome) against the limits.
    # While Redis does not answer, the broker decides alone (README, "Redis:
    # TLS, ACL, and an outage"): the burst limits apply whole on this replica,
    # and what it grants then may go beyond per_day over the day. So the
    # records of those windows (from the broker's log, widened by a second) are
    # judged apart: the others must hold to the shared limits exactly.
    outages = quota_outages(os.path.join(world.work, "broker.log"))
    if outages:
        print(f"Redis outages in the broker's log (quota decided locally): {len(outages)}, "
              f"{sum(end - start - 2 for start, end in outages):.1f} s in all")
    tz = ZoneInfo(args.time_zone)
    admitted = defaultdict(list)  # key -> [(day, t, during an outage)]
    starts = [start for start, _ in outages]
    for record in access:
        if record["outcome"] in ADMITTED:
            day, t = local_day(record["time"], tz)
            i = bisect.bisect_right(starts, t) - 1
            local = i >= 0 and t <= outages[i][1]
            admitted[("post", record["post"])].append((day, t, local))
            admitted[("agent", record["post"], record["sub"])].append((day, t, local))
    worst_daily = []
    worst_burst = []
    local_total = 0
    for key, limits in sorted(world.limits.items()):
        per_second, burst, per_day = limits
        entries = sorted(admitted.get(key, []), key=lambda e: e[1])
        days = Counter(day for day, _, _ in entries)
        local_days = Counter(day for day, _, local in entries if local)
        local_total += sum(local_days.values())
        for day, count in days.items():
            worst_daily.append((count / per_day, key, day, count, per_day, local_days[day]))
            if count - local_days[day] > per_day:
                failures.append(f"quota over-granted: {key} {count} admitted on {day} "
                                f"({local_days[day]} while Redis did not answer), per_day {per_day}")
        # GCRA: n requests admitted within s seconds satisfy n <= burst + per_second * s.
        # The record's time is taken a moment after the decision: allow
        # args.quota_slack_secs of it.
        # Judged on the decisions Redis took (the records outside the outages,
        # exact), and on all of them: each outage may add a whole burst.
        bound = burst + per_second * args.quota_slack_secs
        shared = gcra_excess([t for _, t, local in entries if not local], per_second)
        overall = gcra_excess([t for _, t, _ in entries], per_second)
        worst_burst.append((shared / bound if bound else 0, key, shared, burst, overall))
        if shared > bound:
            failures.append(f"quota over-granted: {key} admitted {shared:.1f} more than its rate "
                            f"allows over some window of Redis's decisions (burst {burst}, "
                            f"{per_second}/s, slack {args.quota_slack_secs} s)")
        if overall > bound + burst * len(outages):
            failures.append(f"quota over-granted: {key} admitted {overall:.1f} more than its rate "
                            f"allows over some window, beyond a burst per Redis outage "
                            f"(burst {burst}, {per_second}/s, {len(outages)} outages)")
    worst_daily.sort(reverse=True)
    worst_burst.sort(reverse=True)
    print("quotas, daily (closest to the limit first): " + "; ".join(
        f"{k[1]}{'/' + k[2] if len(k) > 2 else ''} {c}/{l} on {d}"
        + (f" ({n} while Redis did not answer)" if n else "") for _, k, d, c, l, n in worst_daily[:4]))
    if outages:
        print(f"admitted while Redis did not answer: {local_total} (posts and agents counted apart)")
    print("quotas, burst (largest n - rate x span outside Redis outages, against the burst; "
          "over every decision in brackets): " + "; ".join(
              f"{k[1]}{'/' + k[2] if len(k) > 2 else ''} {b:.2f}/{burst} ({o:.2f})"
              for _, k, b, burst, o in worst_burst[:4]))
    return access


def check_soak_behaviour(run, args, failures):
    results = run["results"]
    expected = {name: statuses for name, _, statuses in run["streams"]}
    expected["probe"] = {200, 401}
    by_stream = defaultdict(Counter)
    unexpected = Counter()
    for r in results:
        by_stream[r[2]][r[5]] += 1
        allowed = expected[r[2]] | {429}
        if r[10] == "stale":
            allowed = {401, 429}
        if r[5] not in allowed:
            unexpected[(r[2], r[5], r[7])] += 1
    print("\n| stream | answers by status |")
    print("|---|---|")
    for name in expected:
        print(f"| {name} | " + ", ".join(f"{s}: {c}" for s, c in sorted(by_stream[name].items())) + " |")
    codes = Counter(r[7] for r in results if r[5] == 429)
    print("429 by limit: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    caches = Counter(r[9] for r in results if r[5] == 200)
    print("200 by meta.cache: " + ", ".join(f"{k}: {v}" for k, v in sorted(caches.items())))
    if unexpected:
        failures.append("unexpected answers: " + ", ".join(
            f"{s}/{st}/{c or '-'} x{n}" for (s, st, c), n in unexpected.most_common(8)))
    print("events: " + "; ".join(f"{w} at {t:.0f} s" for t, w in run["events"]))
    checks = run["checks"]
    if checks.get("policy_reload_failed") or "policy_new_version" not in checks:
        failures.append("the policy reload did not show in /readyz within 15 s")
    else:
        new = checks["policy_new_version"]
        reload_at = [t for t, w in run["events"] if w == "policy reloaded"][0] + run["t_start"]
        edited_at = checks["policy_edited_at"]
        versions = Counter()
        wrong = 0
        for r in results:
            if r[5] != 200:
                continue
            # Answered wholly before the edit: the old version; sent after the
            # reload was seen: the new one.
            if r[0] + r[1] < edited_at and r[8] != run["old_version"]:
                wrong += 1
            if r[0] > reload_at and r[8] != new:
                wrong += 1
            versions[r[8][:15]] += 1
        print(f"policy: reloads {checks['policy_reloads']}; 200s by X-Policy-Version: "
              + ", ".join(f"{k}…: {v}" for k, v in versions.items()) + f"; {wrong} out of place")
        if wrong:
            failures.append(f"policy: {wrong} answers with the wrong policy version")
    if checks.get("withdraw_failed") or "withdrawn_at" not in checks:
        failures.append("JWKS: an old token was still accepted 15 s after its key was withdrawn")
    else:
        withdrawn_at = checks["withdrawn_at"]
        stale = Counter(r[5] for r in results if r[10] == "stale")
        old_accepted = sum(1 for r in results if r[10] == "old" and r[5] not in (401,)
                           and r[0] > withdrawn_at)
        new_refused = sum(1 for r in results if r[10] in ("new", "withdrawn") and r[5] == 401)
        old_refused_before = sum(1 for r in results if r[10] == "old" and r[5] == 401)
        print(f"JWKS rotation: after the withdrawal, old tokens answered {dict(stale)}; "
              f"{new_refused} new tokens refused; {old_refused_before} old tokens refused before it")
        if any(s != 401 for s in stale) or old_accepted or new_refused or old_refused_before:
            failures.append("JWKS rotation: a token got another answer than the documentation's")
    errors = Counter(r[7] for r in results if r[5] == 0 or r[5] >= 500)
    if errors:
        failures.append("transport errors or 5xx: " + ", ".join(f"{k} x{v}" for k, v in errors.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--sim-bin", help="the caf-broker binary that runs `simulate` (default: --bin)")
    parser.add_argument("--work", required=True)
    parser.add_argument("--mode", choices=["soak", "memory"], default="soak")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--agents-per-post", type=int, default=5)
    parser.add_argument("--sample-secs", type=float, default=5)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--max-rss-growth-mib", type=float, default=16)
    parser.add_argument("--cache-max-bytes", type=int, default=64 * MIB)
    parser.add_argument("--cache-ttl-secs", type=int, default=60)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--time-zone", default="Europe/Paris")
    parser.add_argument("--quota-slack-secs", type=float, default=0.25)
    # Quotas of the soak: room for honest traffic, so that the 429s come from
    # the greedy agent, the scanner's error budget and one post's daily quota.
    parser.add_argument("--post-per-second", type=int, default=200)
    parser.add_argument("--post-burst", type=int, default=400)
    parser.add_argument("--post-per-day", type=int, default=10_000_000)
    parser.add_argument("--agent-per-second", type=int, default=50)
    parser.add_argument("--agent-burst", type=int, default=100)
    parser.add_argument("--agent-per-day", type=int, default=1_000_000)
    parser.add_argument("--error-budget-per-second", type=int, default=4)
    parser.add_argument("--error-budget-burst", type=int, default=60)
    # The memory run.
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--found", type=int, default=600_000)
    parser.add_argument("--limited-per-day", type=int, default=20_000)
    parser.add_argument("--limited-requests", type=int, default=30_000)
    parser.add_argument("--max-minutes", type=float, default=90)
    parser.add_argument("--recheck", action="store_true",
                        help="only check the audit log and quotas of the kept run in --work")
    args = parser.parse_args()
    if args.mode == "memory":
        args.records = args.found
        args.cache_ttl_secs = max(args.cache_ttl_secs, 3600)
        big = 1_000_000_000
        args.post_per_second = args.post_burst = args.agent_per_second = args.agent_burst = 1_000_000
        args.post_per_day = args.agent_per_day = big
        args.error_budget_per_second = args.error_budget_burst = 1_000_000

    os.makedirs(args.work, exist_ok=True)
    world = World(args, args.work)
    procs = Processes(args.work)
    failures = []
    if args.recheck:
        # The audit and quota checks again, on the directory of a kept run made
        # with the same options.
        soak_config(args, world) if args.mode == "soak" else memory_config(args, world)
        check_audit_and_quotas({"results": None}, world, args, failures)
        for failure in failures:
            print("FAILED:", failure)
        sys.exit(1 if failures else 0)
    try:
        run = run_soak(args, world, procs) if args.mode == "soak" else run_memory(args, world, procs)
    finally:
        procs.stop_all()
    results = run["results"]
    print(f"\n## {args.mode}: {len(results)} answers in {run['elapsed']:.0f} s "
          f"({len(results) / run['elapsed']:.0f}/s), {args.connections} connections"
          + (f", {run['late']} requests sent more than 1 s late" if run["late"] else ""))
    if run["broker_exit"] != 0:
        failures.append(f"the broker exited with {run['broker_exit']} on SIGTERM")
    report_minutes(run)
    if args.mode == "soak":
        check_memory_flat(run, args, failures)
        check_soak_behaviour(run, args, failures)
    else:
        limit = args.cache_max_bytes + 64 * MIB
        peak = max(s[1] for s in run["samples"]) * 1024
        hwm = run["samples"][-1][2] * 1024
        anon = max(s[3] for s in run["samples"]) * 1024
        statuses = Counter((r[2], r[5]) for r in results)
        print(f"\nlookups by stream and status: " + ", ".join(
            f"{k[0]} {k[1]}: {v}" for k, v in sorted(statuses.items())))
        print("cache metrics at the end: " + "; ".join(run["cache_metrics"]))
        print(f"resident memory: peak VmRSS {peak / MIB:.1f} MiB sampled, VmHWM {hwm / MIB:.1f} MiB "
              f"(peak RssAnon, without the mapped binary, {anon / MIB:.1f} MiB); "
              f"limit cache.max_bytes {args.cache_max_bytes / MIB:.0f} MiB + 64 MiB = {limit / MIB:.0f} MiB")
        if max(peak, hwm) > limit:
            failures.append(f"resident size {max(peak, hwm) / MIB:.1f} MiB over {limit / MIB:.0f} MiB")
        if run["unfinished"]:
            failures.append(f"{run['unfinished']} lookups not sent within --max-minutes")
        if any(r[5] == 0 or r[5] >= 500 for r in results):
            failures.append("transport errors or 5xx: " + str(Counter(r[7] for r in results if r[5] == 0 or r[5] >= 500)))
        wrong = sum(1 for r in results if r[5] not in ({200} if r[2] in ("found",) else {404} if r[2] != "limited" else {200, 429}))
        if wrong:
            failures.append(f"{wrong} lookups answered another status than expected")
    check_audit_and_quotas(run, world, args, failures)
    print()
    if failures:
        for failure in failures:
            print("FAILED:", failure)
        sys.exit(1)
    print("every check passed")


if __name__ == "__main__":
    main()
