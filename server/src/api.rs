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
use crate::{limits, models, privacy, rounds, secagg, updates};

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
        .route("/v1/models/{name}/secagg", get(secagg_current))
        .route("/v1/models/{name}/secagg/{round}", get(secagg_view))
        .route(
            "/v1/models/{name}/secagg/{round}/advertise",
            post(secagg_advertise),
        )
        .route(
            "/v1/models/{name}/secagg/{round}/shares",
            post(secagg_upload_shares).get(secagg_shares_for),
        )
        .route("/v1/models/{name}/secagg/{round}/input", post(secagg_input))
        .route(
            "/v1/models/{name}/secagg/{round}/unmask",
            post(secagg_unmask),
        )
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
    let mut meta = models::meta(&state.db, &name).await?;
    meta.secure_aggregation = state.policy.secure_aggregation(&name);
    Ok(Json(meta).into_response())
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
    if state.policy.secure_aggregation(&name) {
        return Err(ApiError::new(
            ErrorCode::SecureAggregationRequired,
            format!(
                "model '{name}' is aggregated securely: a plain push would store an unmasked \
                 delta; take part in a round under {}",
                tacit_rm::sync::secagg::messages::current_path(&name)
            ),
        ));
    }
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

/// The round id of a secure-aggregation path (`…/secagg/{round}/…`).
fn round_param(params: &[(String, String)]) -> ApiResult<u64> {
    params
        .iter()
        .find(|(k, _)| k == "round")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, "no such round"))
}

/// A round message's JSON body (400 `secagg_malformed` when it is not one).
async fn secagg_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let bytes = read_body(state, headers, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        tacit_rm::sync::secagg::SecAggError::Malformed(format!("unreadable round message: {e}"))
            .into()
    })
}

type RoundPath = axum::extract::Path<Vec<(String, String)>>;

async fn secagg_current(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
) -> ApiResult<Response> {
    Ok(Json(secagg::current(&state.db, &state.policy, &name, &who).await?).into_response())
}

async fn secagg_view(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    axum::extract::Path(params): RoundPath,
) -> ApiResult<Response> {
    let round = round_param(&params)?;
    Ok(Json(secagg::view(&state.db, &state.policy, &name, &who, round).await?).into_response())
}

async fn secagg_advertise(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    axum::extract::Path(params): RoundPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let round = round_param(&params)?;
    let ad = secagg_body(&state, &headers, body).await?;
    let view = secagg::advertise(&state.db, &state.policy, &name, &who, round, &ad).await?;
    Ok(Json(view).into_response())
}

async fn secagg_upload_shares(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    axum::extract::Path(params): RoundPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let round = round_param(&params)?;
    let upload = secagg_body(&state, &headers, body).await?;
    let view = secagg::upload_shares(&state.db, &state.policy, &name, &who, round, &upload).await?;
    Ok(Json(view).into_response())
}

async fn secagg_shares_for(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    axum::extract::Path(params): RoundPath,
) -> ApiResult<Response> {
    let round = round_param(&params)?;
    let shares = secagg::shares_for(&state.db, &state.policy, &name, &who, round).await?;
    Ok(Json(shares).into_response())
}

async fn secagg_input(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    axum::extract::Path(params): RoundPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let round = round_param(&params)?;
    let input = secagg_body(&state, &headers, body).await?;
    let view = secagg::input(&state.db, &state.policy, &name, &who, round, &input).await?;
    Ok(Json(view).into_response())
}

async fn secagg_unmask(
    State(state): State<Arc<AppState>>,
    ModelRequest { who, name }: ModelRequest,
    axum::extract::Path(params): RoundPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let round = round_param(&params)?;
    let response = secagg_body(&state, &headers, body).await?;
    let view = secagg::unmask(&state.db, &state.policy, &name, &who, round, &response).await?;
    Ok(Json(view).into_response())
}
