//! Running the server: the HTTP listener, the round timer, and graceful shutdown (stop
//! accepting, finish the requests in flight — whose transactions then commit or roll back
//! whole — stop the timer, close the pool).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{router, AppState};
use crate::config::Policy;
use crate::db::Db;

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    db: Db,
    policy: Policy,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_timer, timer_stopped) = watch::channel(false);
    let timer = tokio::spawn(crate::rounds::timer(
        db.clone(),
        policy.clone(),
        timer_stopped,
    ));
    let app = router(Arc::new(AppState {
        db: db.clone(),
        policy,
    }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_timer.send(true);
    let _ = timer.await;
    db.pool.close().await;
    served
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signals() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
