//! The one extractor of every model route: the bearer token's principal and the model name
//! from the path, checked in that order (401 before 404, so that an anonymous caller learns
//! nothing about which names exist), then the token's model scope (403 `model_forbidden`).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use tacit_rm::sync::protocol::{self, ApiErrorCode};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::tokens::{self, Principal};

/// An authenticated request on a validly named model.
pub struct ModelRequest {
    pub who: Principal,
    pub name: String,
}

impl FromRequestParts<Arc<AppState>> for ModelRequest {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let who = authenticate(state, &parts.headers).await?;
        // By name: the secure-aggregation routes carry a round id after the model's name.
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ApiErrorCode::NotFound, e.body_text()))?;
        let name = params
            .into_iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v)
            .unwrap_or_default();
        if !protocol::valid_model_name(&name) {
            return Err(ApiError::new(
                ApiErrorCode::NotFound,
                "model names are 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        // After the name check and before any lookup: a restricted token learns nothing about
        // which other models exist (403 whether the name is taken or not).
        if !who.may_use(&name) {
            return Err(ApiError::new(
                ErrorCode::ModelForbidden,
                format!("this token is restricted to other models than '{name}'"),
            ));
        }
        Ok(ModelRequest { who, name })
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
