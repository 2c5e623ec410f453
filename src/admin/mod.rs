//! Admin HTTP listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the
//! bearer-token `/api/*` of interfaces.md ([`api`]).
//!
//! Small and dependency-light (hyper 1, HTTP/1.1). Every error body is JSON. Headers must
//! arrive within 10 s, an `/api` request is answered within [`Api::request_timeout`], and a
//! connection lives at most 30 s; on shutdown, connections finish their request in flight
//! (graceful HTTP/1 close) for up to 5 s.

pub mod api;
mod send_test;

pub use api::{
    syslog_tester, Api, BoxFuture, CallError, ComplianceFn, DestinationStatus, DestinationsFn,
    ReloadFn, SyslogTestFn, TicketApi, Token,
};
pub use send_test::{send_test, test_frame, SendTestError, TestSent};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Answers `/readyz`: `Ok` when ready, or the reason it is not.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Decides `/readyz`.
    pub ready: ReadyCheck,
    /// Appends metrics kept outside the registry (per-partition `consumer_lag`).
    pub extra_metrics: Option<ExtraMetrics>,
    /// Brings registry series that are summed on demand up to date before each render
    /// (`compliance_hits_total`).
    pub before_render: Option<BeforeRender>,
}

/// Writes more Prometheus text after the registry's.
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Updates the registry just before `/metrics` is rendered.
pub type BeforeRender = Arc<dyn Fn() + Send + Sync>;

/// Binds the listener (so that a bad address fails at start, naming it).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("admin.listen {listen:?}: {e}"))?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen {listen:?}: binding: {e}"))
}

/// Serves until `shutdown` is cancelled, with `/api` off; connections in progress get 5 s to
/// finish.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    serve_api(listener, state, Api::default(), shutdown).await;
}

/// As [`serve`], with the `/api/*` endpoints of `api` (off when it has no token).
pub async fn serve_api(
    listener: TcpListener,
    state: AdminState,
    api: Api,
    shutdown: CancellationToken,
) {
    let api = Arc::new(api);
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "Admin accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let api = Arc::clone(&api);
        let stop = shutdown.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let api = Arc::clone(&api);
                async move { Ok::<_, Infallible>(handle(&state, &api, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            // A slow or stuck client cannot hold a connection forever.
            let cap = tokio::time::sleep(Duration::from_secs(30));
            tokio::select! {
                _ = &mut conn => {}
                () = cap => {}
                () = stop.cancelled() => {
                    // Finish the request in flight, then close (no new keep-alive request).
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
}

async fn handle(state: &AdminState, api: &Api, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return api::handle(api, req).await;
    }
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            if let Some(update) = &state.before_render {
                update();
            }
            let mut text = state.metrics.render();
            if let Some(extra) = &state.extra_metrics {
                extra(&mut text);
            }
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match (state.ready)() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => json_error(StatusCode::SERVICE_UNAVAILABLE, &reason),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON error body `{"error": "…"}`.
pub fn json_error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
