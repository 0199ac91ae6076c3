//! Process life cycle of `tidegate run`: connect to the dependencies, serve HTTP, and shut down
//! gracefully on SIGTERM/SIGINT.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::store::Store;
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot reach Redis at REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid MONGODB_URI: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("in-flight work did not finish within the shutdown timeout ({0:?})")]
    ShutdownTimeout(Duration),
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), AppError> {
    run_until(settings, shutdown_signal()).await
}

/// Runs until `shutdown` resolves; then gives in-flight work `shutdown_timeout` to finish.
pub async fn run_until(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let metrics = telemetry::metrics();
    let upkeep = tokio::spawn(telemetry::run_upkeep(metrics, Duration::from_secs(5)));
    let redis = crate::queue::connect(&settings.redis_url).await?;
    let store = Store::connect(
        &settings.mongodb_uri,
        &settings.database,
        settings.store.clone(),
    )
    .await?;
    let listener = TcpListener::bind(settings.http_addr)
        .await
        .map_err(|source| AppError::Listen {
            addr: settings.http_addr,
            source,
        })?;
    tracing::info!(addr = %settings.http_addr, "serving /metrics, /healthz, /readyz");

    let state = AppState {
        redis,
        store,
        metrics,
        ready_timeout: settings.ready_timeout,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = http::serve(listener, state, async move {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    let finished = tokio::select! {
        // Before the signal the server ends only on error.
        finished = &mut server => finished,
        () = shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(());
            tokio::time::timeout(settings.shutdown_timeout, server)
                .await
                .map_err(|_| AppError::ShutdownTimeout(settings.shutdown_timeout))?
        }
    };
    upkeep.abort();
    finished.map_err(AppError::Serve)
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
