//! `/metrics` (Prometheus text), `/healthz` and `/readyz`, served by leaders and standbys alike.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::reconcile::Context;

#[derive(Clone)]
pub struct State {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub ctx: Arc<Context>,
}

async fn metrics(Extract(state): Extract<State>) -> impl IntoResponse {
    for region in state.ctx.regions.all().await {
        state
            .metrics
            .sync_aws_calls(&region.account, &region.aws.region, &region.aws.stats);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once started, unless the last sweep of a region could not reach AWS (the operator
/// then cannot do its work; the message says which region and why) or it is shutting down.
async fn readyz(Extract(state): Extract<State>) -> (StatusCode, String) {
    if !state.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or stopping\n".into(),
        );
    }
    let mut regions = state.ctx.regions.all().await;
    regions.sort_by_key(|r| r.key());
    let unreachable: Vec<String> = regions
        .iter()
        .filter_map(|r| r.unreachable())
        .map(|e| format!("AWS unreachable: {e}"))
        .collect();
    if unreachable.is_empty() {
        (StatusCode::OK, "ok".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", unreachable.join("; ")),
        )
    }
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: State,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    }))
}
