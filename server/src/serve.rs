//! Running the server: the HTTP listener, the round timer, and graceful shutdown within a
//! deadline (stop accepting, let the requests in flight finish — whose transactions then
//! commit or roll back whole — for at most `shutdown_grace`, close what is left, stop the
//! timer, close the pool).
//!
//! The accept loop is hyper's HTTP/1 connection driver under a timer, because a request head
//! must arrive within `header_read_timeout` (idle keep-alive connections included): without
//! it one slow client holds a connection, and a shutdown waiting for it, forever. Bodies
//! have their own deadline where they are read ([`crate::api`]). What hyper refuses to parse
//! it answers itself; [`crate::parse_errors`] gives those answers a JSON body.

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{router, AppState};
use crate::config::{Policy, Timeouts};
use crate::cors::Cors;
use crate::db::Db;

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    db: Db,
    policy: Policy,
    timeouts: Timeouts,
    cors: Option<Cors>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_timer, timer_stopped) = watch::channel(false);
    let timer = tokio::spawn(crate::rounds::timer(
        db.clone(),
        policy.clone(),
        timer_stopped,
    ));
    let app = crate::cors::apply(
        router(Arc::new(AppState {
            db: db.clone(),
            policy,
            timeouts: timeouts.clone(),
        })),
        cors,
    );
    serve_connections(listener, app, &timeouts, shutdown).await;
    let _ = stop_timer.send(true);
    let _ = timer.await;
    db.pool.close().await;
    Ok(())
}

async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    timeouts: &Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let mut stop = stop.clone();
                let header_timeout = timeouts.header_read();
                connections.spawn(async move {
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        // Above the documented limits, which `headers::within_limits`
                        // answers with a JSON 431 (hyper's own answer has no body).
                        .max_headers(crate::headers::HYPER_MAX_HEADERS)
                        .max_buf_size(crate::headers::HYPER_MAX_BUF);
                    let stream = crate::parse_errors::JsonParseErrors::new(stream);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        // The only change ever sent is `true` (or the sender's drop).
                        _ = stop.changed() => {
                            // Finish the request in flight, if any, then close.
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            // Reap finished connections so that the set holds live ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stopping.send(true);
    let drained = tokio::time::timeout(timeouts.grace(), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown deadline reached: closing the connections still open"
        );
        connections.shutdown().await;
    }
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
