//! The HTTP surface: `/metrics` (Prometheus text), `/healthz` (the process is up) and `/readyz`
//! (Redis and MongoDB answer, with a JSON body naming what does not).

pub mod admin;

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::store::Store;
use crate::telemetry::names;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub redis: ConnectionManager,
    pub store: Store,
    pub metrics: &'static PrometheusHandle,
    pub ready_timeout: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Checks the dependencies first, so that `tidegate_dependency_up` is as fresh as the scrape
/// (nothing else calls /readyz in most deployments).
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    readiness(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    pub redis: Check,
    pub mongodb: Check,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let readiness = readiness(&state).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

async fn readiness(state: &AppState) -> Readiness {
    let mut redis = state.redis.clone();
    let limit = state.ready_timeout;
    let (redis, mongodb) = tokio::join!(
        check("redis", limit, crate::queue::ping(&mut redis)),
        check("mongodb", limit, state.store.ping()),
    );
    Readiness {
        ready: redis.ok && mongodb.ok,
        checks: Checks { redis, mongodb },
    }
}

async fn check<E: std::fmt::Display>(
    dependency: &'static str,
    limit: Duration,
    probe: impl Future<Output = Result<(), E>>,
) -> Check {
    let error = match tokio::time::timeout(limit, probe).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    };
    if let Some(error) = &error {
        tracing::warn!(dependency, %error, "readiness check failed");
    }
    let up = if error.is_none() { 1.0 } else { 0.0 };
    metrics::gauge!(names::DEPENDENCY_UP, "dependency" => dependency).set(up);
    Check {
        ok: error.is_none(),
        error,
    }
}
