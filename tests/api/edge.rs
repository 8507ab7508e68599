//! Resource limits at the edge, through raw TLS sockets that misbehave on
//! purpose: too many HTTP/2 streams, a trickled body, too many connections
//! from one address, an oversized header list.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::audit_files::records;
use crate::helpers::{TestApp, assert_problem, repo, spawn_app_with};

const AGENT: &str = "agent_consulaire";
const RADIATION: &str = "verification_radiation";
const SEARCH: &str = "/v1/allocataires/recherche";
/// How long any one exchange of these tests may take before it counts as hung.
const PATIENCE: Duration = Duration::from_secs(10);

/// A TLS connection to the app offering only `alpn`.
pub(crate) async fn connect(app: &TestApp, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    caf_broker::tls::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(repo("certs-dev/ca.pem")).expect("dev CA");
    roots.add(ca).expect("dev CA is a valid root");
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(caf_broker::tls::provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let port = app.address.rsplit(':').next().expect("port");
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}")).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake hung"))?
}

// ------------------------------------------------------------------ HTTP/2

/// A minimal HTTP/2 frame writer and reader: enough to open streams the way a
/// hostile client does, without the flow control a real client applies.
pub(crate) mod frames {
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK integer with an `prefix`-bit prefix, `flags` in the first byte's high bits.
    fn integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    fn string(out: &mut Vec<u8>, text: &str) {
        integer(out, 0, 7, text.len());
        out.extend_from_slice(text.as_bytes());
    }

    /// A header block of literals without indexing (RFC 7541, 6.2.2): a
    /// static-table name index, or 0 and the name.
    pub fn header_block(fields: &[(usize, &str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, name, value) in fields {
            integer(&mut out, 0, 4, *index);
            if *index == 0 {
                string(&mut out, name);
            }
            string(&mut out, value);
        }
        out
    }
}

/// One frame read from the server: type, flags, stream and payload.
pub(crate) async fn read_frame(
    tls: &mut TlsStream<TcpStream>,
) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

#[tokio::test]
async fn an_http2_client_opening_more_streams_than_allowed_sees_the_extra_ones_refused() {
    use frames::*;
    const MAX: u32 = 4;
    const OPENED: u32 = 12;
    let max = MAX.to_string();
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__H2_MAX_CONCURRENT_STREAMS", &max)]).await;
    let token = app.token(AGENT);
    let mut tls = connect(&app, b"h2").await.expect("TLS connection");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let (kind, _, _, settings) = tokio::time::timeout(PATIENCE, read_frame(&mut tls))
        .await
        .expect("server settings in time")
        .expect("server settings");
    assert_eq!(kind, SETTINGS, "the server speaks first with its settings");
    let advertised = settings.chunks(6).find_map(|s| {
        (u16::from_be_bytes([s[0], s[1]]) == MAX_CONCURRENT_STREAMS)
            .then(|| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
    });
    assert_eq!(advertised, Some(MAX), "SETTINGS_MAX_CONCURRENT_STREAMS");
    tls.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();

    // Searches whose bodies never come: each stream stays open, waiting.
    let authorization = format!("Bearer {token}");
    let block = header_block(&[
        (2, "", "POST"),
        (6, "", "https"),
        (4, "", SEARCH),
        (1, "", "localhost"),
        (23, "", &authorization),
        (31, "", "application/json"),
        (0, "x-purpose", RADIATION),
        (0, "x-case-reference", "TN-2026/0042"),
    ]);
    let mut burst = Vec::new();
    for n in 0..OPENED {
        burst.extend(frame(HEADERS, END_HEADERS, 2 * n + 1, &block));
    }
    tls.write_all(&burst).await.unwrap();

    let mut refused = Vec::new();
    let mut goaway = false;
    while refused.len() < (OPENED - MAX) as usize && !goaway {
        let next = tokio::time::timeout(PATIENCE, read_frame(&mut tls)).await;
        let (kind, _, stream, payload) = next.expect("the server answers the burst").unwrap();
        match kind {
            RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                assert_eq!(
                    code, REFUSED_STREAM,
                    "stream {stream} reset for another reason"
                );
                refused.push(stream);
            }
            GOAWAY => goaway = true,
            _ => {}
        }
    }
    assert!(
        !goaway,
        "the connection survives; only the extra streams are refused"
    );
    let first_refused = (2 * MAX) + 1;
    assert!(
        refused.iter().all(|s| *s >= first_refused),
        "a stream within the limit was refused: {refused:?}"
    );
    assert_eq!(refused.len(), (OPENED - MAX) as usize, "{refused:?}");
}

#[tokio::test]
async fn an_http2_header_list_over_the_limit_is_answered_431_before_any_route() {
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__MAX_HEADER_LIST_BYTES", "4096")]).await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Padding", "a".repeat(5000))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status().as_u16(), 431);
}

#[tokio::test]
async fn an_http2_body_trickled_past_the_deadline_is_answered_408_and_the_connection_serves_on() {
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let token = app.token(AGENT);
    let tls = connect(&app, b"h2").await.expect("TLS connection");
    let (client, connection) = h2::client::handshake(tls).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("https://localhost{SEARCH}"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-purpose", RADIATION)
        .header("x-case-reference", "TN-2026/0042")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let trickle = tokio::spawn(async move {
        for byte in br#"{"nir": "295109912611193"}"# {
            if body
                .send_data(bytes::Bytes::copy_from_slice(&[*byte]), false)
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an answer once the deadline passes")
        .expect("an answer, not a reset");
    trickle.abort();
    assert_eq!(response.status().as_u16(), 408);
    let mut problem = Vec::new();
    let mut stream = response.into_body();
    while let Some(chunk) = stream.data().await {
        match chunk {
            Ok(chunk) => problem.extend_from_slice(&chunk),
            // After a complete answer the server stops the unfinished upload
            // with RST_STREAM(NO_ERROR) (RFC 9113, 8.1): the answer stands.
            Err(e) if e.reason() == Some(h2::Reason::NO_ERROR) => break,
            Err(e) => panic!("the answer's body failed: {e}"),
        }
    }
    let problem: serde_json::Value = serde_json::from_slice(&problem).unwrap();
    assert_eq!(problem["code"], "request-timeout");

    // Only the late stream ended: the connection answers the next request.
    let mut client = client.ready().await.expect("the connection is still open");
    let healthz = http::Request::get("https://localhost/healthz")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(healthz, true).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

// ---------------------------------------------------------------- HTTP/1.1

/// Everything the server sends until it closes the connection; `None` if it
/// keeps it open past `PATIENCE`.
async fn read_until_closed(tls: &mut tokio::io::ReadHalf<TlsStream<TcpStream>>) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                // A close without close_notify is a close all the same.
                Err(_) => break,
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn a_body_trickled_past_the_request_deadline_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__REQUEST_TIMEOUT_SECS", "1")]).await;
    let token = app.token(AGENT);
    let tls = connect(&app, b"http/1.1").await.expect("TLS connection");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let body = br#"{"nir": "295109912611193"}"#;
    let head = format!(
        "POST {SEARCH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         X-Purpose: {RADIATION}\r\nX-Case-Reference: TN-2026/0042\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    // One byte a second: the whole body would take far longer than the deadline.
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let answer = read_until_closed(&mut reader)
        .await
        .expect("the server closes the connection after the deadline");
    trickle.abort();
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"request-timeout""#), "{answer}");
    assert!(!answer.contains("295109912611193"), "{answer}");
    let audited: Vec<u16> = records(&app.audit_dir).iter().map(|r| r.status).collect();
    assert_eq!(audited, [408], "the late search is audited as refused");
}

#[tokio::test]
async fn an_http1_header_list_over_the_limit_is_answered_431_as_a_problem() {
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__MAX_HEADER_LIST_BYTES", "4096")]).await;
    let client = reqwest::Client::builder()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(repo("certs-dev/ca.pem")).unwrap(),
        )
        .unwrap()])
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/healthz", app.address))
        .header("X-Padding", "a".repeat(5000))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_problem(response, 431, "headers-too-large").await;
}

// ------------------------------------------------------------- connections

#[tokio::test]
async fn connections_beyond_the_cap_of_one_address_are_closed_at_accept_until_one_ends() {
    let app = spawn_app_with(&[("CAF_BROKER__SERVER__MAX_CONNECTIONS_PER_IP", "2")]).await;
    let first = connect(&app, b"http/1.1").await.expect("first connection");
    let _second = connect(&app, b"http/1.1").await.expect("second connection");
    assert!(
        connect(&app, b"http/1.1").await.is_err(),
        "a third connection from 127.0.0.1 is closed before its TLS handshake"
    );

    drop(first);
    // The server learns of the close when it reads the end of the stream.
    let mut reconnected = None;
    for _ in 0..100 {
        if let Ok(tls) = connect(&app, b"http/1.1").await {
            reconnected = Some(tls);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = reconnected.expect("a slot is free again once a connection ends");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(PATIENCE, third.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
