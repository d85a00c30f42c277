//! HTTP routes: authentication, body limits, conditional GETs, and the mapping of every
//! outcome to a status and a JSON body.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tacit_rm::sync::protocol::{self, ApiErrorCode};

use crate::config::{Policy, Timeouts};
use crate::db::Db;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::ModelRequest;
use crate::{limits, models, privacy, rounds, updates};

pub struct AppState {
    pub db: Db,
    pub policy: Policy,
    pub timeouts: Timeouts,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/models/{name}", get(get_model).put(put_model))
        .route("/v1/models/{name}/meta", get(get_meta))
        .route("/v1/models/{name}/privacy", get(get_privacy))
        .route("/v1/models/{name}/updates", post(post_update))
        .fallback(|| async { ApiError::new(ApiErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not answer that method",
            )
        })
        .layer(axum::middleware::from_fn(crate::headers::within_limits))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match sqlx::query("SELECT 1").execute(&state.db.pool).await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// Reads the body up to the limit: 413 beyond it, announced (Content-Length) or not; 408
/// when it does not arrive within the body read timeout.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
    let policy = &state.policy;
    let too_large = || {
        ApiError::new(
            ApiErrorCode::TooLarge,
            format!("the body is over the limit of {} bytes", policy.body_limit),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > policy.body_limit as u64) {
        return Err(too_large());
    }
    use http_body_util::BodyExt;
    let collect = http_body_util::Limited::new(body, policy.body_limit).collect();
    let Ok(collected) = tokio::time::timeout(state.timeouts.body_read(), collect).await else {
        return Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the body did not arrive within {} s",
                state.timeouts.body_read_timeout
            ),
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        // A broken connection: nothing is kept.
        Err(e) => Err(ApiError::new(
            ApiErrorCode::Malformed,
            format!("cannot read the body: {e}"),
        )),
    }
}

async fn get_model(
    State(state): State<Arc<AppState>>,
    ModelRequest { name, .. }: ModelRequest,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let have = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(protocol::parse_etag);
    // Compare against the version alone before reading the (large) weights.
    let version = models::version(&state.db, &name).await?;
    if have == Some(version) {
        return Ok(not_modified(version));
    }
    let (version, bytes) = models::weights(&state.db, &name).await?;
    if have == Some(version) {
        return Ok(not_modified(version));
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag_value(version)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(protocol::SAFETENSORS),
            ),
        ],
        bytes,
    )
        .into_response())
}

fn etag_value(version: u64) -> HeaderValue {
    HeaderValue::from_str(&protocol::etag(version)).expect("digits and quotes are valid")
}

fn not_modified(version: u64) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [(header::ETAG, etag_value(version))],
    )
        .into_response()
}

async fn put_model(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !who.admin {
        return Err(ApiError::new(
            ApiErrorCode::Forbidden,
            "creating or replacing a model needs an admin token",
        ));
    }
    let body = read_body(&state, &headers, body).await?;
    let version = models::put(&state.db, &name, &body).await?;
    tracing::info!(model = %name, version, by = %who.client, "model stored");
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag_value(version))],
        Json(models::meta(&state.db, &name).await?),
    )
        .into_response())
}

async fn get_meta(
    State(state): State<Arc<AppState>>,
    ModelRequest { name, .. }: ModelRequest,
) -> ApiResult<Response> {
    Ok(Json(models::meta(&state.db, &name).await?).into_response())
}

/// The ε spent so far under DP, or `{"dp": false}` (404 for an unknown model).
async fn get_privacy(
    State(state): State<Arc<AppState>>,
    ModelRequest { name, .. }: ModelRequest,
) -> ApiResult<Response> {
    models::version(&state.db, &name).await?;
    Ok(Json(privacy::answer(&state.db, &state.policy, &name).await?).into_response())
}

async fn post_update(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let key = headers
        .get(protocol::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| protocol::valid_idempotency_key(k))
        .ok_or_else(|| {
            ApiError::new(
                ApiErrorCode::Malformed,
                format!(
                    "an {} header of 1-{} printable characters is required",
                    protocol::IDEMPOTENCY_KEY,
                    protocol::MAX_IDEMPOTENCY_KEY
                ),
            )
        })?
        .to_string();
    // A client over its rate is refused before its body is read (the check is repeated,
    // exactly, in the push's transaction) — unless the key is stored: a retry whose first
    // answer was lost gets that answer.
    if !updates::key_stored(&state.db, &name, &who, &key).await? {
        limits::check_rate(
            &mut *state.db.pool.acquire().await?,
            &state.policy,
            &who.client,
        )
        .await?;
    }
    let body = read_body(&state, &headers, body).await?;
    let stored = updates::accept(&state.db, &state.policy, &name, &who, &key, &body).await?;
    tracing::debug!(model = %name, client = %who.client, key, replayed = stored.replayed, "update stored");
    if !stored.replayed {
        // The push is durable already; a failure (or a panic) aggregating now is retried
        // by the timer and must not turn the 202 into an error or a dropped connection.
        rounds::close_isolated(&state.db, &state.policy, name).await;
    }
    Ok((
        StatusCode::ACCEPTED,
        [(
            protocol::REPLAYED,
            HeaderValue::from_static(if stored.replayed { "true" } else { "false" }),
        )],
        Json(stored.answer),
    )
        .into_response())
}
