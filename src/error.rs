//! The crate's error type. Every public function that can be handed bad input returns
//! [`Error`]; each variant has a stable machine-readable [`Error::code`] that the CLI prints
//! and the browser package will surface as the `code` of a JS `Error`.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tacit-rm's library calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An array's size does not match what the model or another argument expects.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimMismatch {
        what: String,
        expected: usize,
        got: usize,
    },

    /// NaN or ±Inf in an input.
    #[error("non-finite value in {what} at index {index}")]
    NonFinite { what: String, index: usize },

    /// A batch or data set with no rows where at least one is needed.
    #[error("empty input: {what}")]
    Empty { what: String },

    /// A name (objective, method, protocol, activation, …) that is not known.
    #[error("unknown {kind} '{name}' (expected one of: {expected})")]
    UnknownName {
        kind: &'static str,
        name: String,
        expected: String,
    },

    /// A configuration value out of its valid range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Bytes that are not a readable safetensors file, or a file missing required tensors.
    #[error("corrupt weights: {0}")]
    CorruptWeights(String),

    /// Readable weights that do not fit what was asked (schema version, dims, objective).
    #[error("incompatible weights: {0}")]
    IncompatibleWeights(String),

    /// A data file that is readable but does not follow the input format (DESIGN §4).
    #[error("invalid data: {0}")]
    InvalidData(String),

    /// No GPU adapter could be had (no driver, or a browser without WebGPU).
    #[error("no GPU available: {0}")]
    NoGpu(String),

    /// The GPU device was lost or reported an error during a call.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    /// An options object with a field this version does not know (a typo would otherwise be
    /// silently ignored).
    #[error("unknown option: {0}")]
    UnknownOption(String),

    /// The browser exposes no WebGPU adapter and `backend: "webgpu"` was asked for.
    #[error("WebGPU is not available: {0}")]
    NoWebGpu(String),

    /// A call that cannot run while another is in progress (a second `train`).
    #[error("busy: {0}")]
    Busy(String),

    /// The model was closed (by `close()`, or deleted in this tab or another); open it
    /// again. The reason says which.
    #[error("the model is closed: {0}")]
    Closed(&'static str),

    /// Persistent storage (IndexedDB) failed or is unavailable.
    #[error("storage error: {0}")]
    Storage(String),
    /// The sync server could not be reached, or answered with a transient failure (5xx, 429);
    /// the update stays queued and is retried.
    #[error("network error: {0}")]
    Network(String),

    /// The sync server and this client disagree on the model (stale base version beyond what
    /// the server accepts, other dims, an idempotency key reused for another body).
    #[error("sync conflict: {0}")]
    SyncConflict(String),

    /// The sync server refused the credentials (401) or their role (403).
    #[error("sync unauthorised: {0}")]
    SyncUnauthorized(String),

    /// The sync server refused a request for good (a 4xx other than the above); `code` is the
    /// server's own stable code (see `sync::protocol::ApiErrorCode`).
    #[error("sync server refused the request ({status} {code}): {message}")]
    SyncRejected {
        status: u16,
        code: String,
        message: String,
    },

    /// File-system failure.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Defines [`ErrorCode`], its string form and [`ErrorCode::ALL`] from one list, so that the
/// three cannot disagree (the package's `.d.ts` and README are checked against `ALL` by
/// `tests/error_codes.rs`).
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)*) => {
        /// Stable codes, part of the public API: never rename one, only add.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    DimMismatch => "dim_mismatch",
    NonFiniteInput => "non_finite_input",
    EmptyInput => "empty_input",
    UnknownName => "unknown_name",
    InvalidConfig => "invalid_config",
    CorruptWeights => "corrupt_weights",
    IncompatibleWeights => "incompatible_weights",
    InvalidData => "invalid_data",
    NoGpu => "no_gpu",
    DeviceLost => "device_lost",
    Io => "io",
    UnknownOption => "unknown_option",
    NoWebGpu => "no_webgpu",
    Busy => "busy",
    Closed => "closed",
    Storage => "storage",
    Network => "network",
    SyncConflict => "sync_conflict",
    SyncUnauthorized => "sync_unauthorized",
    SyncRejected => "sync_rejected",
    /// The npm package's `init()` could not fetch or compile its `.wasm`. Raised by the
    /// package's JS entry (`src/web/npm/index.js`), before any Rust runs; no [`Error`]
    /// variant maps to it.
    WasmLoad => "wasm_load",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::DimMismatch { .. } => ErrorCode::DimMismatch,
            Error::NonFinite { .. } => ErrorCode::NonFiniteInput,
            Error::Empty { .. } => ErrorCode::EmptyInput,
            Error::UnknownName { .. } => ErrorCode::UnknownName,
            Error::InvalidConfig(_) => ErrorCode::InvalidConfig,
            Error::CorruptWeights(_) => ErrorCode::CorruptWeights,
            Error::IncompatibleWeights(_) => ErrorCode::IncompatibleWeights,
            Error::InvalidData(_) => ErrorCode::InvalidData,
            Error::NoGpu(_) => ErrorCode::NoGpu,
            Error::DeviceLost(_) => ErrorCode::DeviceLost,
            Error::Io { .. } => ErrorCode::Io,
            Error::UnknownOption(_) => ErrorCode::UnknownOption,
            Error::NoWebGpu(_) => ErrorCode::NoWebGpu,
            Error::Busy(_) => ErrorCode::Busy,
            Error::Closed(_) => ErrorCode::Closed,
            Error::Storage(_) => ErrorCode::Storage,
            Error::Network(_) => ErrorCode::Network,
            Error::SyncConflict(_) => ErrorCode::SyncConflict,
            Error::SyncUnauthorized(_) => ErrorCode::SyncUnauthorized,
            Error::SyncRejected { .. } => ErrorCode::SyncRejected,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub(crate) fn unknown(kind: &'static str, name: &str, expected: &[&str]) -> Self {
        Error::UnknownName {
            kind,
            name: name.to_string(),
            expected: expected.join(", "),
        }
    }
}

/// Input checks shared by every public entry point.
pub(crate) mod check {
    use super::{Error, Result};

    pub fn finite(what: &str, values: &[f32]) -> Result<()> {
        if all_finite(values) {
            return Ok(());
        }
        match values.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(Error::NonFinite {
                what: what.to_string(),
                index,
            }),
            None => Ok(()),
        }
    }

    /// Whether every value is finite: the exponent bits of none all set. A branch-free
    /// fold over blocks of 64 (vectorised, in the SIMD flavour as `i32x4` lanes), scanned
    /// by every scoring call (a 10 000 × 384 batch is 3.8 M values).
    fn all_finite(values: &[f32]) -> bool {
        const EXP: u32 = 0x7f80_0000;
        let mut blocks = values.chunks_exact(64);
        for block in &mut blocks {
            let top = block
                .iter()
                .fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
            if top >= EXP {
                return false;
            }
        }
        blocks.remainder().iter().all(|v| v.is_finite())
    }

    /// [`finite`] over an array's values: the vectorised scan where they are one slice.
    pub fn finite_array<D: ndarray::Dimension>(
        what: &str,
        values: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<()> {
        match values.as_slice() {
            Some(flat) => finite(what, flat),
            None => finite_iter(what, values.iter()),
        }
    }

    pub fn finite_iter<'a>(what: &str, values: impl IntoIterator<Item = &'a f32>) -> Result<()> {
        match values.into_iter().position(|v| !v.is_finite()) {
            Some(index) => Err(Error::NonFinite {
                what: what.to_string(),
                index,
            }),
            None => Ok(()),
        }
    }

    pub fn len(what: &str, expected: usize, got: usize) -> Result<()> {
        if expected != got {
            return Err(Error::DimMismatch {
                what: what.to_string(),
                expected,
                got,
            });
        }
        Ok(())
    }

    pub fn non_empty(what: &str, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::Empty {
                what: what.to_string(),
            });
        }
        Ok(())
    }

    pub fn in_range(what: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
        if !(value.is_finite() && value >= lo && value <= hi) {
            return Err(Error::InvalidConfig(format!(
                "{what} = {value} is outside [{lo}, {hi}]"
            )));
        }
        Ok(())
    }

    /// A model version (of imported or pulled weights) a JS number holds exactly: above
    /// [`crate::sync::protocol::MAX_VERSION`] `stats()` and `sync()` could not report it.
    pub fn version(what: &str, version: u64) -> Result<()> {
        let max = crate::sync::protocol::MAX_VERSION;
        if version > max {
            return Err(Error::InvalidData(format!(
                "{what} version {version} is above {max} (2^53 - 1, the largest integer a JS \
                 number holds exactly)"
            )));
        }
        Ok(())
    }
}
