//! HTTP routes: authentication, body limits, conditional GETs, and the mapping of every
//! outcome to a status and a JSON body.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tacit_rm::sync::protocol::{self, ApiErrorCode};

use crate::config::Policy;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::tokens::{self, Principal};
use crate::{models, rounds, updates};

pub struct AppState {
    pub db: Db,
    pub policy: Policy,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/models/{name}", get(get_model).put(put_model))
        .route("/v1/models/{name}/meta", get(get_meta))
        .route("/v1/models/{name}/updates", post(post_update))
        .fallback(|| async { ApiError::new(ApiErrorCode::NotFound, "no such route") })
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

/// The bearer token's principal: 401 without one or with an unknown or revoked one.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(ApiErrorCode::Unauthorized, "a bearer token is required"))?;
    tokens::verify(&state.db, token)
        .await?
        .ok_or_else(|| ApiError::new(ApiErrorCode::Unauthorized, "unknown or revoked token"))
}

fn check_name(name: &str) -> ApiResult<()> {
    if protocol::valid_model_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            ApiErrorCode::NotFound,
            "model names are 1-64 characters of [A-Za-z0-9._-]",
        ))
    }
}

/// Reads the body up to the limit: 413 beyond it, announced (Content-Length) or not.
async fn read_body(policy: &Policy, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
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
    match http_body_util::Limited::new(body, policy.body_limit)
        .collect()
        .await
    {
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
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authenticate(&state, &headers).await?;
    check_name(&name)?;
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
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    if !who.admin {
        return Err(ApiError::new(
            ApiErrorCode::Forbidden,
            "creating or replacing a model needs an admin token",
        ));
    }
    check_name(&name)?;
    let body = read_body(&state.policy, &headers, body).await?;
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
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authenticate(&state, &headers).await?;
    check_name(&name)?;
    Ok(Json(models::meta(&state.db, &name).await?).into_response())
}

async fn post_update(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    check_name(&name)?;
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
    let body = read_body(&state.policy, &headers, body).await?;
    let stored = updates::accept(&state.db, &state.policy, &name, &who, &key, &body).await?;
    tracing::debug!(model = %name, client = %who.client, key, replayed = stored.replayed, "update stored");
    if !stored.replayed {
        // The push is durable already; a failure to aggregate now is retried by the timer
        // and must not turn the 202 into an error.
        if let Err(e) = rounds::close_if_due(&state.db, &state.policy, &name).await {
            tracing::warn!(model = %name, error = %e, "cannot close a round after a push");
        }
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
