//! The wire protocol between clients and the sync server: paths, header names, metadata keys,
//! JSON bodies and the server's error codes. Client and server both compile this one file, so
//! a name changed here changes on both sides at once.

use serde::{Deserialize, Serialize};

/// Header carrying the client's key for a push; the same key always gets the same answer and
/// the update is counted once.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set to `true` on a push answer that replays an earlier one (same key): the body is identical.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// Media type of weights and deltas on the wire.
pub const SAFETENSORS: &str = "application/octet-stream";

/// `__metadata__` key of a delta: the global version it was computed against.
pub const META_BASE_VERSION: &str = "base_version";
/// `__metadata__` key of a delta: how many training examples it summarises (the FedAvg weight).
pub const META_N_EXAMPLES: &str = "n_examples";
/// `__metadata__` key of a delta: the objective it was trained with (written by the store).
pub const META_OBJECTIVE: &str = "objective";

/// Largest model version a client accepts (imported or pulled): 2^53 − 1, the largest integer
/// a JS number holds exactly, so that the browser package can report every version it holds.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// Longest model name; names are also path segments and database keys.
pub const MAX_MODEL_NAME: usize = 64;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// `GET`/`PUT` the global weights of a model.
pub fn model_path(name: &str) -> String {
    format!("/v1/models/{name}")
}

/// `GET` a model's description as JSON ([`ModelMeta`]).
pub fn meta_path(name: &str) -> String {
    format!("/v1/models/{name}/meta")
}

/// `POST` a delta.
pub fn updates_path(name: &str) -> String {
    format!("/v1/models/{name}/updates")
}

/// `GET` the privacy spent on a model so far (`{"dp": false}` without DP, else a
/// [`super::privacy::PrivacyReport`] with `"dp": true`).
pub fn privacy_path(name: &str) -> String {
    format!("/v1/models/{name}/privacy")
}

/// Model names: 1 to [`MAX_MODEL_NAME`] of `[A-Za-z0-9._-]`, so that they are safe in a URL
/// path segment, a log line and a file name without escaping.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Idempotency keys: printable ASCII without spaces, at most [`MAX_IDEMPOTENCY_KEY`] bytes.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The `ETag` of a model version (a strong tag: the bytes of a version never change).
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The version named by an `ETag` / `If-None-Match` value, if it is one of ours.
pub fn parse_etag(value: &str) -> Option<u64> {
    value
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

/// The code of a push refused because the model is aggregated securely (the server's own
/// code, not an [`ApiErrorCode`]): the push is kept, for a secure round to take.
pub const SECURE_AGGREGATION_REQUIRED: &str = "secure_aggregation_required";

/// The code of a secure-aggregation request to a model in plain mode: the one answer that
/// lets a client push a plain delta (see `pass`).
pub const SECURE_AGGREGATION_OFF: &str = "secure_aggregation_off";

/// Every error answer's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// The 202 answer to a push. A replay (same idempotency key) returns the same body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateAccepted {
    /// The server's id of the stored update.
    pub update_id: u64,
    pub base_version: u64,
    pub n_examples: u64,
}

/// `GET /v1/models/{name}/meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    pub version: u64,
    pub dim: usize,
    pub hidden: Vec<usize>,
    pub activation: String,
    pub outputs: usize,
    pub num_params: usize,
    /// Updates stored and not yet aggregated.
    pub pending_updates: u64,
    /// Every update ever accepted for this model (pending and aggregated).
    pub accepted_updates: u64,
    /// Sum of `n_examples` over every accepted update.
    pub accepted_examples: u64,
    /// Aggregation rounds closed so far.
    pub rounds: u64,
    /// The server aggregates this model securely (`--secure-aggregation`): it takes masked
    /// inputs in rounds and refuses plain pushes. A client asks before sending any delta.
    #[serde(default)]
    pub secure_aggregation: bool,
}

/// The server's error codes, one per failure a client can act on. Stable: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorCode {
    /// 400: the body or a header is not what the endpoint reads.
    Malformed,
    /// 401: no bearer token, or one the server does not know (or revoked).
    Unauthorized,
    /// 403: a valid token without the role the endpoint needs.
    Forbidden,
    /// 404: no such model (or route).
    NotFound,
    /// 409: the delta's base version is too old for the server (or from the future).
    StaleBaseVersion,
    /// 409: the delta's shape is not the model's.
    DimsMismatch,
    /// 409: an idempotency key reused with a different body.
    IdempotencyKeyReused,
    /// 413: the body is over the server's limit.
    TooLarge,
    /// 422: NaN or ±Inf in the delta or the weights.
    NonFinite,
    /// 422: the delta's L2 norm is over the server's bound.
    NormOverBound,
    /// 500: the server failed (the request had no effect).
    Internal,
}

impl ApiErrorCode {
    pub const ALL: [ApiErrorCode; 11] = [
        ApiErrorCode::Malformed,
        ApiErrorCode::Unauthorized,
        ApiErrorCode::Forbidden,
        ApiErrorCode::NotFound,
        ApiErrorCode::StaleBaseVersion,
        ApiErrorCode::DimsMismatch,
        ApiErrorCode::IdempotencyKeyReused,
        ApiErrorCode::TooLarge,
        ApiErrorCode::NonFinite,
        ApiErrorCode::NormOverBound,
        ApiErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::Malformed => "malformed",
            ApiErrorCode::Unauthorized => "unauthorized",
            ApiErrorCode::Forbidden => "forbidden",
            ApiErrorCode::NotFound => "not_found",
            ApiErrorCode::StaleBaseVersion => "stale_base_version",
            ApiErrorCode::DimsMismatch => "dims_mismatch",
            ApiErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ApiErrorCode::TooLarge => "too_large",
            ApiErrorCode::NonFinite => "non_finite",
            ApiErrorCode::NormOverBound => "norm_over_bound",
            ApiErrorCode::Internal => "internal",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ApiErrorCode::Malformed => 400,
            ApiErrorCode::Unauthorized => 401,
            ApiErrorCode::Forbidden => 403,
            ApiErrorCode::NotFound => 404,
            ApiErrorCode::StaleBaseVersion
            | ApiErrorCode::DimsMismatch
            | ApiErrorCode::IdempotencyKeyReused => 409,
            ApiErrorCode::TooLarge => 413,
            ApiErrorCode::NonFinite | ApiErrorCode::NormOverBound => 422,
            ApiErrorCode::Internal => 500,
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}
