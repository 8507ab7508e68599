//! HTTP/2 connections, served with the `h2` crate under the broker's own
//! settings and handed stream by stream to the actix-web application.
//!
//! actix-http builds its HTTP/2 connections with `h2::server::Builder::new()`
//! and sets only the flow-control windows: no `SETTINGS_MAX_CONCURRENT_STREAMS`
//! (unlimited), and a header list limit of 16 MiB. This module owns the
//! handshake instead, so that the `h2` crate itself refuses a stream beyond
//! `server.h2_max_concurrent_streams` with `RST_STREAM(REFUSED_STREAM)` and a
//! header block over `server.max_header_list_bytes` with `431`, before any
//! application code runs. Each request then goes through the same
//! application service (middleware, routes, problems) as an HTTP/1.1 one.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::header::HttpDate;
use actix_http::{HttpMessage, Payload, Request, Response};
use actix_server::GracefulShutdownSignal;
use actix_service::Service;
use bytes::Bytes;
use futures_util::future::poll_fn;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls::ClientCertificate;

/// The most bytes sent in one DATA frame (the default `SETTINGS_MAX_FRAME_SIZE`).
const CHUNK_BYTES: usize = 16_384;

/// What an HTTP/2 connection is allowed.
#[derive(Debug, Clone, Copy)]
pub struct H2Limits {
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
    /// The longest wait for the client's connection preface and settings.
    pub handshake_timeout: Duration,
    /// A connection without any open stream for this long is closed with GOAWAY.
    pub idle_timeout: Duration,
}

/// Serves one HTTP/2 connection until the client, the idle timeout or the
/// server's graceful shutdown closes it (the last two with GOAWAY, letting
/// open streams finish).
pub async fn serve<T, S>(
    io: T,
    app: Rc<S>,
    peer: Option<SocketAddr>,
    client: Option<ClientCertificate>,
    limits: H2Limits,
    shutdown: GracefulShutdownSignal,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = Response<BoxBody>, Error = Response<BoxBody>> + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes);
    let handshake = builder.handshake::<T, Bytes>(io);
    let mut connection = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%error, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("HTTP/2 handshake timed out");
            return;
        }
    };
    let open = Rc::new(Cell::new(0usize));
    let mut idle = pin!(tokio::time::sleep(limits.idle_timeout));
    let mut closing = false;
    loop {
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    let stream = OpenStream::new(&open);
                    let app = app.clone();
                    let client = client.clone();
                    actix_web::rt::spawn(async move {
                        let _stream = stream;
                        answer(app.as_ref(), request, respond, peer, client).await;
                    });
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "HTTP/2 connection ended with an error");
                    break;
                }
                None => break,
            },
            () = shutdown.notified(), if !closing => {
                connection.graceful_shutdown();
                closing = true;
            }
            () = idle.as_mut(), if !closing => {
                if open.get() == 0 {
                    // GOAWAY; `accept` then returns `None` once the client is told.
                    connection.graceful_shutdown();
                    closing = true;
                } else {
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
            }
        }
    }
}

/// Counts a stream as open for as long as its task lives.
struct OpenStream(Rc<Cell<usize>>);

impl OpenStream {
    fn new(open: &Rc<Cell<usize>>) -> OpenStream {
        open.set(open.get() + 1);
        OpenStream(open.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One stream: the request through the application, then its answer.
async fn answer<S>(
    app: &S,
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    peer: Option<SocketAddr>,
    client: Option<ClientCertificate>,
) where
    S: Service<Request, Response = Response<BoxBody>, Error = Response<BoxBody>>,
{
    let (parts, body) = request.into_parts();
    let head_only = parts.method == http::Method::HEAD;
    let payload: actix_http::BoxedPayloadStream = Box::pin(body_stream(body));
    let mut request = Request::with_payload(Payload::Stream { payload });
    let head = request.head_mut();
    head.uri = parts.uri;
    head.method = parts.method;
    head.version = parts.version;
    head.headers = parts.headers.into();
    head.peer_addr = peer;
    if let Some(client) = client {
        request.extensions_mut().insert(client);
    }
    let response = match app.call(request).await {
        Ok(response) | Err(response) => response,
    };
    if let Err(error) = send(response, respond, head_only).await {
        tracing::debug!(%error, "HTTP/2 answer not delivered");
    }
}

/// The request body, giving flow-control capacity back as it is read.
fn body_stream(
    body: RecvStream,
) -> impl futures_util::Stream<Item = Result<Bytes, PayloadError>> + 'static {
    futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.data().await? {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                Some((Ok(chunk), Some(body)))
            }
            Err(error) => Some((Err(PayloadError::from(error)), None)),
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("the response body failed: {0}")]
    Body(String),
}

/// Sends the head, then the body in frames the client has room for.
async fn send(
    response: Response<BoxBody>,
    mut respond: SendResponse<Bytes>,
    head_only: bool,
) -> Result<(), SendError> {
    let (response, body) = response.into_parts();
    let size = body.size();
    let mut head = http::Response::new(());
    *head.status_mut() = response.status();
    *head.version_mut() = http::Version::HTTP_2;
    let no_body = matches!(size, BodySize::None | BodySize::Sized(0))
        || response.status() == http::StatusCode::NO_CONTENT;
    if let BodySize::Sized(len) = size
        && response.status() != http::StatusCode::NO_CONTENT
    {
        head.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mut has_date = false;
    for (name, value) in response.headers().iter() {
        // Connection-specific fields do not exist in HTTP/2 (RFC 9113, 8.2.2).
        if name == CONNECTION || name == TRANSFER_ENCODING || name == UPGRADE {
            continue;
        }
        if name == CONTENT_LENGTH {
            continue;
        }
        has_date |= name == DATE;
        head.headers_mut().append(name.clone(), value.clone());
    }
    if !has_date
        && let Ok(date) = HeaderValue::from_str(&HttpDate::from(SystemTime::now()).to_string())
    {
        head.headers_mut().insert(DATE, date);
    }
    let end = no_body || head_only;
    let mut stream = respond.send_response(head, end)?;
    if end {
        return Ok(());
    }
    let mut body = pin!(body);
    while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let mut chunk = chunk.map_err(|e| SendError::Body(e.to_string()))?;
        while !chunk.is_empty() {
            stream.reserve_capacity(chunk.len().min(CHUNK_BYTES));
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                // The stream was reset by the client: nothing more to send.
                None => return Ok(()),
                Some(capacity) => {
                    let capacity = capacity?;
                    let part = chunk.split_to(capacity.min(chunk.len()));
                    stream.send_data(part, false)?;
                }
            }
        }
    }
    stream.send_data(Bytes::new(), true)?;
    Ok(())
}
