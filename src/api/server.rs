//! The HTTP/1.1 server under the API: axum's router on hyper, with the read timeouts
//! `axum::serve` does not set. A client that does not send a request head within
//! [`HEADER_READ_TIMEOUT`] (including an idle keep-alive connection), or a body within
//! [`BODY_READ_TIMEOUT`], is disconnected, so slow or silent connections cannot pile up.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Longest wait for a complete request head, and for the next one on a kept-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to receive a request body (the default 4 MiB limit at 1 Mbit/s takes 34 s).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long the server waits for a client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    pub header_read: Duration,
    pub body_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { header_read: HEADER_READ_TIMEOUT, body_read: BODY_READ_TIMEOUT }
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then let requests in flight finish
/// (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, Timeouts::default()).await
}

/// [`serve`] with other timeouts (tests use short ones).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(timeouts.body_read));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(timeouts.header_read).keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {} s; stopping anyway", SHUTDOWN_GRACE.as_secs());
    }
    Ok(())
}
