//! Hostile requests: encoded and dot-segment paths, repeated and oversized
//! headers, header injection, wrong media types and charsets, odd JSON, NUL
//! bytes and odd methods. They are written byte for byte on plain HTTP/1.1
//! sockets (a client library would tidy them first) and, where HTTP/2 differs,
//! sent over HTTP/2. Each gets a problem with a stable code, never a 5xx,
//! never an echo of what was sent, and the broker serves on afterwards.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::connect;
use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
const DOSSIER: &str = "/v1/allocataires/1000002";
const SEARCH: &str = "/v1/allocataires/recherche";
const NIR: &str = "295109912611193";
/// How long any one exchange may take before it counts as hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// A broker on plain HTTP, so that the tests write the very bytes it reads.
async fn plain_app() -> TestApp {
    spawn_app_with(&[
        ("CAF_BROKER__SERVER__TLS", "false"),
        ("CAF_BROKER__SERVER__CLIENT_AUTH", "off"),
    ])
    .await
}

/// One answer as read off the socket.
struct Raw {
    status: u16,
    /// The status line and header fields, lowercased.
    head: String,
    body: Vec<u8>,
    /// Everything received, for messages and echo checks.
    all: Vec<u8>,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.all).into_owned()
    }
}

/// Writes `request` on a new connection and reads until the server closes it
/// (every request here says `Connection: close`, or is one the server closes on).
async fn exchange(app: &TestApp, request: &[u8]) -> Raw {
    let port = app.address.rsplit(':').next().expect("port");
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connection");
    tcp.write_all(request).await.expect("request written");
    let mut all = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed in time: {}",
        String::from_utf8_lossy(&all)
    );
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    let status = head
        .strip_prefix("http/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let body = all[split + 4..].to_vec();
    Raw {
        status,
        head,
        body,
        all,
    }
}

/// A request head with a valid token, purpose and case reference, then `extra`
/// (header lines, each ending in CRLF) and `Connection: close`.
fn request(method: &str, target: &str, token: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         X-Purpose: {RADIATION}\r\nX-Case-Reference: TN-2026/0042\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A search with `content_type` and `body`.
fn search(token: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let extra = format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    let mut bytes = request("POST", SEARCH, token, &extra);
    bytes.extend_from_slice(body);
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts a problem answer with `status` and `code` that repeats none of `hostile`.
fn assert_problem_answer(answer: &Raw, status: u16, code: &str, hostile: &[&[u8]], case: &str) {
    assert_eq!(answer.status, status, "{case}: {}", answer.text());
    assert!(
        answer
            .head
            .contains("\r\ncontent-type: application/problem+json"),
        "{case}: {}",
        answer.text()
    );
    let problem: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("{case}: the problem is not JSON ({e}): {}", answer.text()));
    assert_eq!(problem["code"], code, "{case}: {problem}");
    assert_eq!(problem["status"], status, "{case}");
    assert_no_echo(answer, hostile, case);
}

fn assert_no_echo(answer: &Raw, hostile: &[&[u8]], case: &str) {
    for bytes in hostile {
        assert!(
            !contains(&answer.all, bytes),
            "{case}: the answer repeats {:?}: {}",
            String::from_utf8_lossy(bytes),
            answer.text()
        );
    }
}

/// A request the HTTP layer cannot parse: a bare `400` without a body (the
/// request never reaches a route), the connection closed, nothing repeated.
fn assert_refused_unparsed(answer: &Raw, hostile: &[&[u8]], case: &str) {
    assert_eq!(answer.status, 400, "{case}: {}", answer.text());
    assert!(answer.body.is_empty(), "{case}: {}", answer.text());
    assert_no_echo(answer, hostile, case);
}

/// The broker still answers a well-formed request in full.
async fn assert_serves_on(app: &TestApp, token: &str) {
    let answer = exchange(app, &request("GET", DOSSIER, token, "")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let dossier: Value = serde_json::from_slice(&answer.body).expect("a JSON dossier");
    assert_eq!(dossier["data"]["numero_allocataire"], "1000002");
}

#[tokio::test]
async fn encoded_and_dot_segment_paths_are_refused_without_normalising_or_echoing_them() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    let cases: &[(&str, u16, &str, &[u8])] = &[
        ("/v1/allocataires/%2e%2e/", 404, "route-not-found", b".."),
        ("/v1/allocataires/%2e%2e", 400, "invalid-request", b".."),
        ("/v1/allocataires/..", 400, "invalid-request", b".."),
        ("/v1/./allocataires/1000002", 404, "route-not-found", b"/./"),
        (
            "/v1/allocataires/../allocataires/1000002",
            404,
            "route-not-found",
            b"/../",
        ),
        (
            "/v1/%2e/allocataires/1000002",
            404,
            "route-not-found",
            b"%2e",
        ),
        ("/v1/allocataires%2F1000002", 404, "route-not-found", b"%2F"),
        (
            "/v1/allocataires/1000002%2F",
            400,
            "invalid-request",
            b"%2F",
        ),
        (
            "/v1/allocataires/%2F1000002",
            400,
            "invalid-request",
            b"%2F",
        ),
        (
            "/v1/allocataires/%252e%252e",
            400,
            "invalid-request",
            b"%25",
        ),
        (
            "/v1/allocataires/%2531000002",
            400,
            "invalid-request",
            b"%25",
        ),
        (
            "/v1/allocataires/%C0%AE%C0%AE",
            400,
            "invalid-request",
            b"%C0",
        ),
        (
            "/v1/allocataires/%C0%AF1000002",
            400,
            "invalid-request",
            b"%C0",
        ),
        ("/v1/allocataires/%00", 400, "invalid-request", b"%00"),
        (
            "/v1/allocataires/1000002%00",
            400,
            "invalid-request",
            b"%00",
        ),
        ("/v1/allocataires/%FF%FE", 400, "invalid-request", b"%FF"),
        ("/v1//allocataires/1000002", 404, "route-not-found", b"//"),
        ("/V1/ALLOCATAIRES/1000002", 404, "route-not-found", b"ALLOC"),
    ];
    for (target, status, code, hostile) in cases {
        let answer = exchange(&app, &request("GET", target, &token, "")).await;
        assert_problem_answer(
            &answer,
            *status,
            code,
            &[*hostile, target.as_bytes()],
            target,
        );
    }
    assert_serves_on(&app, &token).await;
}

#[tokio::test]
async fn repeated_identity_and_purpose_headers_are_refused_whichever_comes_first() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    let other = app.token_of("TN-TUNIS", "agent-43", AGENT);
    // Two valid tokens: which one would speak for the request is not for the broker to guess.
    let twice = request(
        "GET",
        DOSSIER,
        &token,
        &format!("Authorization: Bearer {other}\r\n"),
    );
    let answer = exchange(&app, &twice).await;
    assert_problem_answer(
        &answer,
        401,
        "unauthenticated",
        &[token.as_bytes(), other.as_bytes()],
        "two Authorization",
    );

    let cases: &[(&str, &[u8])] = &[
        ("X-Purpose: controle_fraude\r\n", b"controle_fraude"),
        ("X-Case-Reference: TN-2026/9999\r\n", b"TN-2026/9999"),
    ];
    for (extra, hostile) in cases {
        let answer = exchange(&app, &request("GET", DOSSIER, &token, extra)).await;
        assert_problem_answer(&answer, 400, "invalid-request", &[*hostile], extra);
    }
    assert_serves_on(&app, &token).await;
}

#[tokio::test]
async fn oversized_and_non_ascii_header_values_get_problems_and_never_a_5xx() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    // Within the header list limit: the value is read, and refused as a purpose.
    let long_purpose = format!("X-Purpose: {}\r\n", "p".repeat(4000));
    let mut long = request("GET", DOSSIER, &token, &long_purpose);
    // The first X-Purpose is the valid one: replace the whole header list.
    long = String::from_utf8(long)
        .unwrap()
        .replacen(&format!("X-Purpose: {RADIATION}\r\n"), "", 1)
        .into_bytes();
    let answer = exchange(&app, &long).await;
    assert_problem_answer(
        &answer,
        400,
        "invalid-request",
        &["p".repeat(100).as_bytes()],
        "a 4000-byte purpose",
    );

    // Over `server.max_header_list_bytes` (16 KiB by default): 431 as a problem.
    let padding = format!("X-Padding: {}\r\n", "a".repeat(20_000));
    let answer = exchange(&app, &request("GET", DOSSIER, &token, &padding)).await;
    assert_problem_answer(
        &answer,
        431,
        "headers-too-large",
        &["a".repeat(100).as_bytes()],
        "a 20 000-byte header",
    );

    // A token of megabytes is cut off by the HTTP layer, before any route.
    let huge = format!("Authorization: Bearer {}\r\n", "t".repeat(300_000));
    let answer = exchange(&app, &request("GET", DOSSIER, &token, &huge)).await;
    assert_eq!(answer.status, 431, "{}", answer.text());
    assert_no_echo(&answer, &["t".repeat(100).as_bytes()], "a 300 KB header");

    // Latin-1 bytes in values (obs-text): read as not ASCII, never as text.
    let latin = b"GET /v1/allocataires/1000002 HTTP/1.1\r\nHost: localhost\r\n\
        Authorization: Bearer \xe9t\xe9\r\nX-Purpose: radiation\xe9\r\n\
        X-Case-Reference: TN\xff\r\nConnection: close\r\n\r\n";
    let answer = exchange(&app, latin).await;
    assert_problem_answer(
        &answer,
        401,
        "unauthenticated",
        &[b"\xe9", b"\xff"],
        "obs-text",
    );
    let latin_purpose = replace(
        &request("GET", DOSSIER, &token, ""),
        RADIATION.as_bytes(),
        b"radiation\xe9",
    );
    let answer = exchange(&app, &latin_purpose).await;
    assert_problem_answer(
        &answer,
        400,
        "invalid-request",
        &[b"\xe9"],
        "obs-text purpose",
    );
    assert_serves_on(&app, &token).await;
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .expect("the text to replace");
    [&haystack[..at], to, &haystack[at + from.len()..]].concat()
}

#[tokio::test]
async fn header_injection_and_nul_bytes_in_the_head_are_refused_by_the_http_layer_alone() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    let head = String::from_utf8(request("GET", DOSSIER, &token, "")).unwrap();
    let cases: &[(&str, &[u8], &[u8])] = &[
        (
            "a CR inside a value",
            b"X-Purpose: verification_radiation\r\n",
            b"X-Purpose: verification_radiation\rX-Injected: evil\r\n",
        ),
        (
            "obs-fold",
            b"X-Case-Reference: TN-2026/0042\r\n",
            b"X-Case-Reference: TN-2026/\r\n X-Injected-evil\r\n",
        ),
        (
            "a NUL in a value",
            b"X-Case-Reference: TN-2026/0042\r\n",
            b"X-Case-Reference: TN-2026\x00X-Injected-evil\r\n",
        ),
        (
            "a NUL in the path",
            b"GET /v1/allocataires/1000002 ",
            b"GET /v1/allocataires/1000\x00X-Injected-evil ",
        ),
        (
            "a space in the path",
            b"GET /v1/allocataires/1000002 ",
            b"GET /v1/allocataires/1000 X-Injected-evil ",
        ),
        (
            "a header name with a space",
            b"X-Purpose: ",
            b"X-Injected evil: 1\r\nX-Purpose: ",
        ),
    ];
    for (case, from, to) in cases {
        let hostile = replace(head.as_bytes(), from, to);
        let answer = exchange(&app, &hostile).await;
        assert!(
            answer.status == 400 && !answer.head.contains("x-injected"),
            "{case}: {}",
            answer.text()
        );
        assert_refused_unparsed(&answer, &[b"Injected"], case);
    }
    assert_serves_on(&app, &token).await;
}

#[tokio::test]
async fn a_search_body_sent_as_anything_but_utf8_json_is_refused_415() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    let body = format!(r#"{{"nir":"{NIR}"}}"#);
    for content_type in [
        "text/plain",
        "application/json; charset=latin1",
        "application/json; charset=ISO-8859-1",
        "application/json;charset=utf-16",
        "application/json-patch",
        "application/json-patch+json",
        "application/jsonx",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json\u{0}",
        "",
    ] {
        let answer = exchange(&app, &search(&token, content_type, body.as_bytes())).await;
        if content_type.contains('\0') {
            assert_refused_unparsed(&answer, &[NIR.as_bytes()], content_type);
            continue;
        }
        assert_problem_answer(
            &answer,
            415,
            "unsupported-media-type",
            &[NIR.as_bytes(), b"latin1", b"patch"],
            content_type,
        );
    }
    // Two content types, the first one acceptable.
    let twice = search(
        &token,
        "application/json\r\nContent-Type: text/plain",
        body.as_bytes(),
    );
    let answer = exchange(&app, &twice).await;
    assert_problem_answer(
        &answer,
        415,
        "unsupported-media-type",
        &[NIR.as_bytes()],
        "two Content-Type",
    );
    // UTF-8 named, in any spelling, is JSON.
    for content_type in [
        "application/json",
        "Application/JSON; charset=UTF-8",
        "application/json; charset=\"utf-8\"",
    ] {
        let answer = exchange(&app, &search(&token, content_type, body.as_bytes())).await;
        assert_eq!(answer.status, 200, "{content_type}: {}", answer.text());
    }
}

#[tokio::test]
async fn odd_json_in_a_search_body_is_an_invalid_request_that_quotes_none_of_it() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    let other = "187036912312345";
    let deep = format!("{}{}", "[".repeat(1500), "]".repeat(1500));
    let deep_object = format!(r#"{{"nir":{}"x"{}}}"#, "[".repeat(1500), "]".repeat(1500));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "duplicated keys",
            format!(r#"{{"nir":"{NIR}","nir":"{other}"}}"#).into_bytes(),
            400,
            "invalid-request",
        ),
        (
            "duplicated keys, same value",
            format!(r#"{{"nir":"{NIR}","nir":"{NIR}"}}"#).into_bytes(),
            400,
            "invalid-request",
        ),
        ("deep arrays", deep.into_bytes(), 400, "invalid-request"),
        (
            "deep arrays under nir",
            deep_object.into_bytes(),
            400,
            "invalid-request",
        ),
        (
            "a huge number",
            br#"{"nir": 1e999999999999}"#.to_vec(),
            400,
            "invalid-request",
        ),
        (
            "a long integer",
            format!(r#"{{"nir": {}}}"#, "9".repeat(3000)).into_bytes(),
            400,
            "invalid-request",
        ),
        (
            "a raw NUL in the string",
            b"{\"nir\":\"2951099126\x0011193\"}".to_vec(),
            400,
            "invalid-request",
        ),
        (
            "an escaped NUL",
            br#"{"nir":"2951099126\u000011193"}"#.to_vec(),
            400,
            "invalid-request",
        ),
        (
            "a NUL after the object",
            format!("{{\"nir\":\"{NIR}\"}}\0").into_bytes(),
            400,
            "invalid-request",
        ),
        (
            "invalid UTF-8",
            b"{\"nir\":\"29510\xc0\xae9912611193\"}".to_vec(),
            400,
            "invalid-request",
        ),
        (
            "a UTF-16 body",
            format!(r#"{{"nir":"{NIR}"}}"#)
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            400,
            "invalid-request",
        ),
        (
            "a byte-order mark",
            [
                &b"\xef\xbb\xbf"[..],
                format!(r#"{{"nir":"{NIR}"}}"#).as_bytes(),
            ]
            .concat(),
            400,
            "invalid-request",
        ),
        (
            "over max_body_bytes",
            format!(r#"{{"nir":"{}"}}"#, "9".repeat(5000)).into_bytes(),
            413,
            "payload-too-large",
        ),
    ];
    for (case, body, status, code) in cases {
        let answer = exchange(&app, &search(&token, "application/json", &body)).await;
        assert_problem_answer(
            &answer,
            status,
            code,
            // Seven digits: short needles turn up in the answer's own random
            // request id (hex) by chance.
            &[
                NIR.as_bytes(),
                other.as_bytes(),
                b"[[[",
                b"9999999",
                b"2611193",
            ],
            case,
        );
    }
    assert_serves_on(&app, &token).await;
}

/// Every route this listener serves, and the one method it takes.
const ROUTES: &[(&str, &str)] = &[
    (DOSSIER, "GET"),
    (SEARCH, "POST"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/metrics", "GET"),
    ("/openapi.json", "GET"),
];
const ODD_METHODS: &[&str] = &[
    "TRACE", "PATCH", "PUT", "DELETE", "OPTIONS", "get", "post", "Get", "PROPFIND", "FOO",
];

#[tokio::test]
async fn odd_methods_on_every_route_are_answered_405_with_the_method_allowed_and_nothing_echoed() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    for (path, allowed) in ROUTES {
        for method in ODD_METHODS.iter().chain(["GET", "POST"].iter()) {
            if method == allowed {
                continue;
            }
            let extra = "X-Trace-Me: echo-canary\r\nContent-Length: 0\r\n";
            let answer = exchange(&app, &request(method, path, &token, extra)).await;
            let case = format!("{method} {path}");
            assert_problem_answer(
                &answer,
                405,
                "method-not-allowed",
                &[b"echo-canary", token.as_bytes()],
                &case,
            );
            assert!(
                answer
                    .head
                    .contains(&format!("\r\nallow: {}", allowed.to_ascii_lowercase())),
                "{case}: {}",
                answer.text()
            );
        }
    }
    for method in ODD_METHODS {
        let answer = exchange(&app, &request(method, "/nowhere", &token, "")).await;
        assert_problem_answer(
            &answer,
            404,
            "route-not-found",
            &[b"nowhere"],
            &format!("{method} /nowhere"),
        );
    }
    assert_serves_on(&app, &token).await;
}

#[tokio::test]
async fn connect_and_absolute_form_targets_are_routed_by_their_path_alone() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    // CONNECT has no route: an authority target matches no path, a path target
    // is a route that does not take the method.
    let cases: &[(&str, u16, &str)] = &[
        ("localhost:443", 404, "route-not-found"),
        ("evil.example:443", 404, "route-not-found"),
        (DOSSIER, 405, "method-not-allowed"),
        (
            "http://evil.example/v1/allocataires/1000002",
            405,
            "method-not-allowed",
        ),
    ];
    for (target, status, code) in cases {
        let answer = exchange(&app, &request("CONNECT", target, &token, "")).await;
        let case = format!("CONNECT {target}");
        assert_problem_answer(&answer, *status, code, &[b"evil", token.as_bytes()], &case);
    }
    // An absolute-form GET is read by its path, like any other.
    let absolute = request("GET", "http://evil.example/nowhere", &token, "");
    let answer = exchange(&app, &absolute).await;
    assert_problem_answer(&answer, 404, "route-not-found", &[b"evil"], "absolute form");
    assert_serves_on(&app, &token).await;
}

#[tokio::test]
async fn over_http2_the_same_hostile_requests_get_the_same_problems() {
    let app = spawn_app().await;
    let token = app.token(AGENT);
    let other = app.token_of("TN-TUNIS", "agent-43", AGENT);
    let tls = connect(&app, b"h2").await.expect("TLS connection");
    let (client, connection) = h2::client::handshake(tls).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);

    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        u16,
        &'static str,
    );
    let bearer = format!("Bearer {token}");
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v1/./allocataires/1000002",
            vec![],
            404,
            "route-not-found",
        ),
        (
            "GET",
            "/v1/allocataires/%2e%2e",
            vec![],
            400,
            "invalid-request",
        ),
        (
            "GET",
            "/v1/allocataires/%C0%AE",
            vec![],
            400,
            "invalid-request",
        ),
        (
            "GET",
            "/v1/allocataires/1000002%00",
            vec![],
            400,
            "invalid-request",
        ),
        (
            "GET",
            DOSSIER,
            vec![("authorization", format!("Bearer {other}"))],
            401,
            "unauthenticated",
        ),
        (
            "GET",
            DOSSIER,
            vec![("x-purpose", "controle_fraude".into())],
            400,
            "invalid-request",
        ),
        ("TRACE", DOSSIER, vec![], 405, "method-not-allowed"),
        ("PATCH", SEARCH, vec![], 405, "method-not-allowed"),
        ("get", DOSSIER, vec![], 405, "method-not-allowed"),
        (
            "POST",
            SEARCH,
            vec![("content-type", "application/json; charset=latin1".into())],
            415,
            "unsupported-media-type",
        ),
    ];
    for (method, path, extra, status, code) in cases {
        let mut builder = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("https://localhost{path}"))
            .header("authorization", &bearer)
            .header("x-purpose", RADIATION)
            .header("x-case-reference", "TN-2026/0042");
        for (name, value) in &extra {
            builder = builder.header(*name, value);
        }
        let body = format!(r#"{{"nir":"{NIR}"}}"#);
        let mut client = client
            .clone()
            .ready()
            .await
            .expect("the connection serves on");
        let (response, mut stream) = client
            .send_request(builder.body(()).unwrap(), false)
            .expect("request sent");
        let _ = stream.send_data(bytes::Bytes::from(body), true);
        let response = tokio::time::timeout(PATIENCE, response)
            .await
            .expect("an answer in time")
            .expect("an answer, not a reset");
        let case = format!("{method} {path} {extra:?}");
        assert_eq!(response.status().as_u16(), status, "{case}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let mut received = Vec::new();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => received.extend_from_slice(&chunk),
                Err(e) if e.reason() == Some(h2::Reason::NO_ERROR) => break,
                Err(e) => panic!("{case}: the answer's body failed: {e}"),
            }
        }
        let problem: Value = serde_json::from_slice(&received).expect("a JSON problem");
        assert_eq!(problem["code"], code, "{case}");
        let text = problem.to_string();
        for hostile in [
            token.as_str(),
            other.as_str(),
            "controle_fraude",
            "latin1",
            NIR,
        ] {
            assert!(!text.contains(hostile), "{case}: {text}");
        }
    }
    let response = app.get_dossier("1000002", &token, RADIATION).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn conflicting_body_framing_is_refused_and_never_lets_a_second_request_through() {
    let app = plain_app().await;
    let token = app.token(AGENT);
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let body = format!(r#"{{"nir":"{NIR}"}}"#);
    let framings = [
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\nContent-Length: 4\r\n",
            body.len()
        ),
        "Content-Type: application/json\r\nContent-Length: 99999999999999999999999\r\n".into(),
        "Content-Type: application/json\r\nContent-Length: -1\r\n".into(),
        "Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n".into(),
        "Content-Type: application/json\r\nTransfer-Encoding: chunked, identity\r\n".into(),
    ];
    for framing in framings {
        let mut hostile = request("POST", SEARCH, &token, &framing);
        hostile.extend_from_slice(body.as_bytes());
        hostile.extend_from_slice(smuggled.as_bytes());
        let answer = exchange(&app, &hostile).await;
        let text = answer.text();
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "{framing:?}: one answer only, the smuggled request unread: {text}"
        );
        assert_refused_unparsed(&answer, &[NIR.as_bytes(), b"healthz"], &framing);
    }

    // A declared length over `server.max_body_bytes` is refused before the body is read.
    let announced = request(
        "POST",
        SEARCH,
        &token,
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n",
    );
    let answer = exchange(&app, &announced).await;
    assert_problem_answer(&answer, 413, "payload-too-large", &[], "announced 1 MB");

    // A chunked body that grows past the limit is refused as it arrives.
    let mut chunked = request(
        "POST",
        SEARCH,
        &token,
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
    );
    for _ in 0..5 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", "9".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(&app, &chunked).await;
    assert_problem_answer(
        &answer,
        413,
        "payload-too-large",
        &[b"9999999"],
        "chunked 5 KiB",
    );

    // More header fields than the HTTP layer parses.
    let many: String = (0..120).map(|n| format!("X-Field-{n}: {n}\r\n")).collect();
    let answer = exchange(&app, &request("GET", DOSSIER, &token, &many)).await;
    assert!(
        [400, 431].contains(&answer.status),
        "120 header fields: {}",
        answer.text()
    );
    assert_no_echo(&answer, &[b"X-Field"], "120 header fields");

    // A path of 20 000 digits: read, and refused as a numéro.
    let long = format!("/v1/allocataires/{}", "1".repeat(20_000));
    let answer = exchange(&app, &request("GET", &long, &token, "")).await;
    assert_problem_answer(
        &answer,
        400,
        "invalid-request",
        &["1".repeat(64).as_bytes()],
        "a 20 000-digit numéro",
    );
    assert_serves_on(&app, &token).await;
}

#[tokio::test]
async fn over_http2_a_header_value_with_cr_lf_or_nul_ends_its_connection_before_any_route() {
    use crate::edge::frames::*;
    use crate::edge::read_frame;
    const END_STREAM: u8 = 0x1;
    const PROTOCOL_ERROR: u32 = 0x1;
    let app = spawn_app().await;
    let token = app.token(AGENT);
    let authorization = format!("Bearer {token}");
    // Literal header fields (HPACK, no Huffman) carry any byte: a hostile
    // client can send what no HTTP library would let it write. The HTTP/2
    // layer refuses the header block as undecodable: GOAWAY(PROTOCOL_ERROR)
    // for the connection, and the request never reaches a route.
    for value in [
        "verification_radiation\r\nx-injected: evil",
        "verification_radiation\nx-injected: evil",
        "verification_radiation\0evil",
    ] {
        let mut tls = connect(&app, b"h2").await.expect("TLS connection");
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        let (kind, _, _, _) = tokio::time::timeout(PATIENCE, read_frame(&mut tls))
            .await
            .expect("server settings in time")
            .expect("server settings");
        assert_eq!(kind, SETTINGS, "the server speaks first with its settings");
        tls.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        let block = header_block(&[
            (2, "", "GET"),
            (7, "", "https"),
            (4, "", DOSSIER),
            (1, "", "localhost"),
            (23, "", &authorization),
            (0, "x-purpose", value),
            (0, "x-case-reference", "TN-2026/0042"),
        ]);
        tls.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
            .unwrap();
        let goaway = loop {
            let next = tokio::time::timeout(PATIENCE, read_frame(&mut tls)).await;
            let (kind, _, stream, payload) = next
                .expect("the server answers in time")
                .expect("a GOAWAY before the connection closes");
            assert_ne!(kind, HEADERS, "{value:?}: stream {stream} reached a route");
            if kind == GOAWAY {
                break payload;
            }
        };
        let code = u32::from_be_bytes(goaway[4..8].try_into().unwrap());
        assert_eq!(code, PROTOCOL_ERROR, "{value:?}");
        assert!(!contains(&goaway, b"evil"), "{value:?}: {goaway:?}");
    }
    assert_serves_on_http2(&app, &token).await;
}

/// The broker still answers a well-formed request over HTTP/2.
async fn assert_serves_on_http2(app: &TestApp, token: &str) {
    let response = app.get_dossier("1000002", token, RADIATION).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}
