//! Errors answered to clients: an HTTP status and a JSON body `{code, message}` whose code
//! is stable. Most codes are the protocol's [`ApiErrorCode`]s; the refusals that protect the
//! server from one client (rate, quota, example counts, slow bodies) and those of its own
//! access rules (model scopes, CORS origins) are [`ErrorCode`]s of their own until the
//! protocol lists them. Database failures become `internal` (logged
//! here, never leaked in detail) — every handler's transaction has been rolled back by then,
//! so an error never leaves anything half-written.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tacit_rm::sync::protocol::{self, ApiErrorCode, ErrorBody};

/// Every code the server answers. Stable: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// One of the protocol's codes.
    Api(ApiErrorCode),
    /// 422: `n_examples` over the server's per-update maximum (`--max-examples-per-update`).
    ExamplesOverBound,
    /// 429: the client pushed more than its rate allows; `Retry-After` says when to retry.
    RateLimited,
    /// 507: the model's pending updates fill their quota until the next round closes.
    QuotaExceeded,
    /// 408: the request body arrived slower than the server's read timeout.
    RequestTimeout,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 403: a token restricted to some models (`token create --model`) used on another one.
    ModelForbidden,
    /// 403: a CORS preflight from an origin not in `--allow-origin`.
    OriginNotAllowed,
    /// 431: more request headers, or more header bytes, than the server accepts.
    HeadersTooLarge,
    /// 400: a request line or header that is not HTTP/1.1 ([`crate::parse_errors`]).
    BadRequest,
    /// 414: a request target longer than the server reads.
    UriTooLong,
    /// 409: a plain push to a model under secure aggregation (it would store an unmasked
    /// delta).
    SecureAggregationRequired,
    /// 409: a secure-aggregation route of a model in plain mode.
    SecureAggregationOff,
    /// A secure-aggregation refusal: `tacit_rm::sync::secagg::SecAggError`'s code and status.
    SecAgg { code: &'static str, status: u16 },
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Api(code) => code.as_str(),
            ErrorCode::ExamplesOverBound => "examples_over_bound",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ModelForbidden => "model_forbidden",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::SecureAggregationRequired => protocol::SECURE_AGGREGATION_REQUIRED,
            ErrorCode::SecureAggregationOff => protocol::SECURE_AGGREGATION_OFF,
            ErrorCode::SecAgg { code, .. } => code,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Api(code) => code.status(),
            ErrorCode::ExamplesOverBound => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::QuotaExceeded => 507,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ModelForbidden | ErrorCode::OriginNotAllowed => 403,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::BadRequest => 400,
            ErrorCode::UriTooLong => 414,
            ErrorCode::SecureAggregationRequired | ErrorCode::SecureAggregationOff => 409,
            ErrorCode::SecAgg { status, .. } => status,
        }
    }
}

impl From<ApiErrorCode> for ErrorCode {
    fn from(code: ApiErrorCode) -> Self {
        ErrorCode::Api(code)
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429 and 507 answers).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: impl Into<ErrorCode>, message: impl Into<String>) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
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

impl From<tacit_rm::sync::secagg::SecAggError> for ApiError {
    fn from(e: tacit_rm::sync::secagg::SecAggError) -> Self {
        ApiError::new(
            ErrorCode::SecAgg {
                code: e.code(),
                status: e.status(),
            },
            e.to_string(),
        )
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
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
