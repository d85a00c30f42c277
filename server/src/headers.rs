//! Limits on request headers, answered like every other refusal: 431 with a JSON code.
//! hyper enforces its own limits while it parses (100 headers, ~400 KiB of buffer) and
//! answers past them with an empty 431 of its own; so the accept loop raises hyper's limits
//! ([`HYPER_MAX_HEADERS`], [`HYPER_MAX_BUF`]) and this layer enforces the documented ones
//! ([`MAX_HEADERS`], [`MAX_HEADER_BYTES`]). Past hyper's raised limits (four times ours) hyper
//! answers itself, and [`crate::parse_errors`] gives that answer the same JSON code.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};

/// Headers a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Bytes of header names and values a request may carry.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// hyper's parse limits, above ours so that our answer is the one a client sees.
pub const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;
pub const HYPER_MAX_BUF: usize = 4 * MAX_HEADER_BYTES + (64 << 10);

/// The layer: refuses a request over [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`] before any
/// route sees it.
pub async fn within_limits(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len().saturating_add(value.len()))
        .fold(0usize, usize::saturating_add);
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "{} headers of {bytes} bytes: at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}
