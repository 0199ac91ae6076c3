//! The HTTP surface: `/metrics` (Prometheus text), `/healthz` (the process is up) and `/readyz`
//! (Redis and MongoDB answer, with a JSON body naming what does not). While it serves, the
//! dependencies are checked in the background every [`CHECK_EVERY`], so that `/metrics` answers
//! at once from what the last checks found.

pub mod admin;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::Redis;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::store::Store;
use crate::telemetry::names;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub redis: Redis,
    pub store: Store,
    pub metrics: &'static PrometheusHandle,
    /// The time limit of each dependency check (`TIDEGATE_READY_TIMEOUT`).
    pub ready_timeout: Duration,
    /// What the dependency checks last found.
    pub dependencies: Dependencies,
}

/// How often the dependencies are checked in the background: a few times per usual scrape
/// interval (15 s), so that `tidegate_dependency_up` is at most this (plus a check's time
/// limit) behind, and cheap (two round trips).
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The dependencies' last known state, written by each check (in the background and behind
/// /readyz) and read by /metrics, so that a scrape never waits on a dependency. It used to
/// check them first: with the database down it did not answer within 2 s, past Prometheus'
/// scrape timeout, and every series was lost during the outage, when they matter most.
#[derive(Clone, Default)]
pub struct Dependencies(Arc<Mutex<Vec<Known>>>);

/// One dependency's last check: whether it answered, and when the check ended.
#[derive(Debug, Clone, Copy)]
struct Known {
    dependency: &'static str,
    up: bool,
    at: Instant,
}

impl Dependencies {
    /// Records a check; returns whether the dependency was up at the check before (up when
    /// never checked), so that only a change is logged.
    fn record(&self, dependency: &'static str, up: bool) -> bool {
        let known = Known {
            dependency,
            up,
            at: Instant::now(),
        };
        // A panic elsewhere while holding the lock leaves plain data behind: still usable.
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match all.iter_mut().find(|k| k.dependency == dependency) {
            Some(slot) => std::mem::replace(slot, known).up,
            None => {
                all.push(known);
                true
            }
        }
    }

    /// Sets the gauges from the last checks: up or down, and how long ago that was found. A
    /// dependency not checked yet has no series.
    fn publish(&self) {
        let all = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for known in all {
            let up = if known.up { 1.0 } else { 0.0 };
            metrics::gauge!(names::DEPENDENCY_UP, "dependency" => known.dependency).set(up);
            metrics::gauge!(names::DEPENDENCY_CHECK_AGE, "dependency" => known.dependency)
                .set(known.at.elapsed().as_secs_f64());
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and lets open requests finish.
/// Meanwhile the dependencies are checked every [`CHECK_EVERY`] for /metrics.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let checks = tokio::spawn(check_dependencies(state.clone(), CHECK_EVERY));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    checks.abort();
    served
}

/// Checks the dependencies now and then every `every` (a check still running delays the next),
/// each within `ready_timeout`, until aborted.
pub(crate) async fn check_dependencies(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        readiness(&state).await;
    }
}

/// Renders what is known now, without waiting on any dependency: their state is the last
/// checks', with its age (`tidegate_dependency_check_age_seconds`).
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.dependencies.publish();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(state.metrics),
    )
}

#[derive(Debug, Serialize)]
pub(crate) struct Readiness {
    pub ready: bool,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub(crate) struct Checks {
    pub redis: Check,
    pub mongodb: Check,
}

#[derive(Debug, Serialize)]
pub(crate) struct Check {
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
    let known = &state.dependencies;
    let (redis, mongodb) = tokio::join!(
        check("redis", limit, known, crate::queue::ping(&mut redis)),
        check("mongodb", limit, known, state.store.ping()),
    );
    Readiness {
        ready: redis.ok && mongodb.ok,
        checks: Checks { redis, mongodb },
    }
}

/// One dependency's check within `limit`, recorded in `known` as soon as it ends (the other's
/// may still be waiting).
async fn check<E: std::fmt::Display>(
    dependency: &'static str,
    limit: Duration,
    known: &Dependencies,
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
    // Said when the dependency goes down and when it is back, not at every check.
    let was_up = known.record(dependency, error.is_none());
    match (&error, was_up) {
        (Some(error), true) => tracing::warn!(dependency, %error, "dependency check failed"),
        (None, false) => tracing::info!(dependency, "dependency check passes again"),
        _ => {}
    }
    Check {
        ok: error.is_none(),
        error,
    }
}
