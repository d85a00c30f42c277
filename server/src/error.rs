//! Errors answered to clients: an HTTP status and a JSON body `{code, message}` whose code
//! is one of the protocol's stable [`ApiErrorCode`]s. Database failures become `internal`
//! (logged here, never leaked in detail) — every handler's transaction has been rolled back
//! by then, so an error never leaves anything half-written.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tacit_rm::sync::protocol::{ApiErrorCode, ErrorBody};

#[derive(Debug)]
pub struct ApiError {
    pub code: ApiErrorCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// Maps the library's parsing errors of a delta or weights file.
    pub fn from_weights_error(e: tacit_rm::Error) -> Self {
        use tacit_rm::Error as E;
        let code = match &e {
            E::NonFinite { .. } => ApiErrorCode::NonFinite,
            _ => ApiErrorCode::Malformed,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError::new(
            ApiErrorCode::Internal,
            "storage failure; nothing was changed",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code.as_str().to_string(),
            message: self.message,
        };
        (status, Json(body)).into_response()
    }
}
