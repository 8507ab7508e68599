//! The HTTP server under the application: accepting connections, the cap of
//! connections per client address, TLS with ALPN (`h2`, `http/1.1`), HTTP/1.1
//! through actix-http and HTTP/2 through the `h2` crate with the broker's own
//! settings (see [`h2`]).
//!
//! It stands where `actix_web::HttpServer` stood, because that server offers
//! no hook for either limit: its HTTP/2 handshake is fixed inside actix-http
//! (unlimited concurrent streams, 16 MiB header lists) and a connection can
//! only be refused there after its TLS handshake. Here a connection over the
//! per-address cap is closed at accept, before TLS costs anything, and every
//! HTTP/2 connection advertises and enforces `SETTINGS_MAX_CONCURRENT_STREAMS`.
//!
//! Workers, signals (SIGINT, SIGTERM) and graceful shutdown are those of
//! `actix-server`, as under `HttpServer`. The application sees the same
//! requests either way, with one difference: its `AppConfig` is the default
//! one (actix-web builds the other only inside `HttpServer`), so
//! `ConnectionInfo` falls back to `http` and `localhost:8080` when a request
//! names neither a scheme nor a host. The broker reads neither.
//!
//! One server may hold several listeners ([`Listeners`]), each with its own
//! application and TLS: the API and the operations listener share the
//! workers, the signals and the graceful shutdown, so one stop closes both.
//!
//! The client certificate of a TLS connection, once rustls has verified it
//! (`server.client_auth`), goes into the extensions of each request of that
//! connection as a [`ClientCertificate`]: through actix-http's connection
//! data for HTTP/1.1, directly for each HTTP/2 stream. A request of a
//! connection without one has none.

mod h2;
mod peers;

use std::fmt;
use std::marker::PhantomData;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::{BoxBody, MessageBody};
use actix_http::{HttpMessage, HttpService, Request, Response};
use actix_server::Server;
use actix_service::{IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_factory};
use actix_service::{apply_fn_factory, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::ClientCertificate;

pub use self::h2::H2Limits;
pub use self::peers::{Peers, Slot};

/// How long a client has to finish its TLS handshake, waiting for a turn
/// included (actix-web's default).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// TLS handshakes one worker runs at once (actix-web's default): past it, a
/// new connection waits its turn within its handshake timeout, so a flood of
/// handshakes from many addresses holds bounded memory and CPU.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// How long an idle connection is kept open (actix-web's default keep-alive).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long the server waits for a client to read the end of an answer
/// before closing its HTTP/1.1 connection (actix-web's default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How the server runs and what one client may hold, on each of its listeners.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    /// The deadline for a request's head (the body's is the route's).
    pub request_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
    pub max_connections_per_ip: usize,
}

/// One listening socket and how its connections are secured.
pub struct Endpoint {
    /// The name of the listener in the server's logs.
    pub name: &'static str,
    pub listener: TcpListener,
    /// `None` serves plain HTTP/1.1 (on loopback or behind a TLS-terminating proxy only).
    pub tls: Option<rustls::ServerConfig>,
}

/// Any byte stream a connection is served over (TCP, or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// An HTTP/1.1 connection's stream and the client certificate it was opened
/// with, which actix-http hands to every request as connection data.
struct Connection {
    io: Box<dyn Io>,
    client: Option<ClientCertificate>,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The listeners of one server, each with its own application: they share
/// the server's workers, its signals and its graceful shutdown, so they start
/// and stop together.
pub struct Listeners {
    builder: actix_server::ServerBuilder,
    shutdown: actix_server::GracefulShutdownSignal,
    options: ServerOptions,
}

impl Listeners {
    pub fn new(options: ServerOptions) -> Self {
        let mut builder = Server::build();
        if options.workers > 0 {
            builder = builder.workers(options.workers);
        }
        builder = builder.shutdown_timeout(options.shutdown_timeout_secs);
        let shutdown = builder.graceful_shutdown_signal();
        Self {
            builder,
            shutdown,
            options,
        }
    }

    /// Serves `endpoint` with the application that `factory` builds once per
    /// worker. Each listener has its own cap of connections per client address.
    pub fn listen<F, I, S, B>(self, endpoint: Endpoint, factory: F) -> std::io::Result<Self>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        B: MessageBody + 'static,
    {
        let Self {
            builder,
            shutdown,
            options,
        } = self;
        let builder = listen(builder, shutdown.clone(), &options, endpoint, factory)?;
        Ok(Self {
            builder,
            shutdown,
            options,
        })
    }

    /// The server; await it to serve until stopped.
    pub fn run(self) -> Server {
        self.builder.run()
    }
}

/// Adds `endpoint` to the server being built.
fn listen<F, I, S, B>(
    builder: actix_server::ServerBuilder,
    shutdown: actix_server::GracefulShutdownSignal,
    options: &ServerOptions,
    endpoint: Endpoint,
    factory: F,
) -> std::io::Result<actix_server::ServerBuilder>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    B: MessageBody + 'static,
{
    let peers = Peers::new(options.max_connections_per_ip);
    let tls = endpoint.tls.map(|mut config| {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let h2_limits = H2Limits {
        max_concurrent_streams: options.h2_max_concurrent_streams,
        max_header_list_bytes: options.max_header_list_bytes,
        handshake_timeout: options.request_timeout,
        idle_timeout: KEEP_ALIVE,
    };
    let secure = tls.is_some();
    let request_timeout = options.request_timeout;
    builder.listen(endpoint.name, endpoint.listener, move || {
        let factory = factory.clone();
        let peers = peers.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        fn_factory(move || {
            let factory = factory.clone();
            let peers = peers.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            async move {
                let shutdown_h2 = shutdown.clone();
                let app = || {
                    map_config(
                        factory()
                            .into_factory()
                            .map_err(|e| e.into().error_response()),
                        |_| AppConfig::default(),
                    )
                };
                let mut http1 = HttpService::<Connection, _, B>::build()
                    .on_connect_ext(|connection: &Connection, data| {
                        if let Some(client) = &connection.client {
                            data.insert(client.clone());
                        }
                    })
                    .keep_alive(KEEP_ALIVE)
                    .client_request_timeout(request_timeout)
                    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                    .graceful_shutdown_signal(move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    });
                if secure {
                    http1 = http1.secure();
                }
                // HTTP/1.1 requests find the client certificate where HTTP/2
                // streams do: in the request's extensions.
                let app1 = apply_fn_factory(app(), |request: Request, app: &_| {
                    if let Some(client) = request.conn_data::<ClientCertificate>().cloned() {
                        request.extensions_mut().insert(client);
                    }
                    Service::call(app, request)
                });
                let http1 = http1
                    .h1::<_, B>(app1)
                    .new_service(())
                    .await
                    .map_err(|e| tracing::error!(error = ?e, "HTTP/1.1 service not built"))?;
                let http2 = app()
                    .new_service(())
                    .await
                    .map_err(|e| tracing::error!(error = ?e, "HTTP/2 service not built"))?;
                let worker = Rc::new(Worker {
                    handshakes: tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES),
                    shutdown: shutdown_h2,
                    http1,
                    http2: Rc::new(Boxed(http2, PhantomData::<B>)),
                    tls,
                    peers,
                    h2_limits,
                });
                Ok::<_, ()>(fn_service(move |tcp: TcpStream| {
                    let worker = worker.clone();
                    async move {
                        worker.connection(tcp).await;
                        Ok::<_, ()>(())
                    }
                }))
            }
        })
    })
}

/// What one worker thread serves connections with.
struct Worker<H1, H2> {
    http1: H1,
    http2: Rc<H2>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Turns for TLS handshakes on this worker.
    handshakes: tokio::sync::Semaphore,
    peers: Arc<Peers>,
    h2_limits: H2Limits,
    shutdown: actix_server::GracefulShutdownSignal,
}

impl<H1, H2> Worker<H1, H2>
where
    H1: Service<(Connection, Option<std::net::SocketAddr>), Response = ()>,
    H1::Error: fmt::Display,
    H2: Service<Request, Response = Response<BoxBody>, Error = Response<BoxBody>> + 'static,
{
    /// One connection, from accept to close.
    async fn connection(&self, tcp: TcpStream) {
        let peer = tcp.peer_addr().ok();
        let Some(address) = peer else { return };
        let Some(_slot) = self.peers.admit(address.ip()) else {
            crate::telemetry::record_connection_refused();
            tracing::debug!("connection refused: its client holds server.max_connections_per_ip");
            return;
        };
        // Small answers must not wait for a delayed ACK (about 40 ms with HTTP/2).
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            self.http1_connection(Box::new(tcp), None, peer).await;
            return;
        };
        let handshake = async {
            // The semaphore is never closed: a permit always comes, if late.
            let _turn = self.handshakes.acquire().await;
            tls.accept(tcp).await
        };
        let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        };
        // Verified by rustls during the handshake (none unless asked for); the leaf comes first.
        let tls = stream.get_ref().1;
        let client = tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| ClientCertificate::new(leaf.clone().into_owned()));
        if tls.alpn_protocol() == Some(b"h2") {
            let shutdown = self.shutdown.clone();
            let http2 = self.http2.clone();
            h2::serve(stream, http2, peer, client, self.h2_limits, shutdown).await;
        } else {
            self.http1_connection(Box::new(stream), client, peer).await;
        }
    }

    async fn http1_connection(
        &self,
        io: Box<dyn Io>,
        client: Option<ClientCertificate>,
        peer: Option<std::net::SocketAddr>,
    ) {
        if let Err(error) = self.http1.call((Connection { io, client }, peer)).await {
            tracing::debug!(%error, "HTTP/1.1 connection ended with an error");
        }
    }
}

/// The application service with its answers as `Response<BoxBody>`.
struct Boxed<S, B>(S, PhantomData<B>);

impl<S, B> Service<Request> for Boxed<S, B>
where
    S: Service<Request>,
    S::Error: Into<Response<BoxBody>>,
    S::Response: Into<Response<B>>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Response<BoxBody>;
    type Future =
        futures_util::future::LocalBoxFuture<'static, Result<Response<BoxBody>, Response<BoxBody>>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&self, request: Request) -> Self::Future {
        let call = self.0.call(request);
        Box::pin(async move {
            call.await
                .map(|response| response.into().map_into_boxed_body())
                .map_err(Into::into)
        })
    }
}
