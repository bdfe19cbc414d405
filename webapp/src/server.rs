//! Serving the site over HTTP/1.1 with limits that `warp::serve` does not expose: how long a
//! client may take to send its request head, how large the head may be, and how many headers it
//! may carry. Each request gets its connection's peer address attached ([`PeerAddr`]), from
//! which [`crate::client`] finds the client's.
//!
//! Request bodies have their own deadlines where they are read ([`crate::web::form`] and
//! [`crate::uploads::read_upload`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower_service::Service;
use warp::Filter;

use crate::App;
use crate::client::PeerAddr;

/// A client must send the whole request head (request line and headers) within this time, for
/// the first request and for each request on a kept-alive connection; otherwise the connection
/// is closed. This is what stops slowloris-style clients from holding connections open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers, bytes); a larger one is answered 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most headers a request may carry; more is answered 431.
pub const MAX_HEADERS: usize = 64;

/// Serve [`crate::routes`] on `listener` until `shutdown` completes, then let the requests in
/// flight finish (at most 30 s).
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_filter(crate::routes(app), listener, shutdown).await;
}

async fn serve_filter<F>(filter: F, listener: TcpListener, shutdown: impl Future<Output = ()>)
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let service = warp::service(filter);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let mut service = service.clone();
            async move { service.call(req).await }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_header_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), per_request));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running 30 s after shutdown began; exiting anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_carry_the_peer_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let filter = crate::client::client_addr(Default::default())
            .map(|c: crate::client::ClientAddr| c.to_string());
        let server = tokio::spawn(serve_filter(filter, listener, async {
            let _ = stopped.await;
        }));
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "127.0.0.1");
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
