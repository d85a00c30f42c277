//! tacit-server: the aggregation server of tacit-rm's weight sync (DESIGN §7).
//!
//! Request path: [`serve`] (connections, read timeouts) → [`cors`] (browser origins) → [`api`] (routes, body limits) with
//! [`extract`] (token and model name) → [`updates`] / [`models`] (validation, [`limits`],
//! and storage in one transaction each) → [`rounds`] (aggregation under a row lock) using the
//! pure math of [`aggregate`] (`tacit_rm::sync::aggregate`, which `tacit eval --protocol users` runs too). [`db`] owns connections and migrations, [`tokens`] the
//! credentials, [`privacy`] the DP accountant of each model, [`secagg`] the secure-aggregation rounds. Everything a client can get wrong is an [`error::ApiError`] with a stable code.

pub use tacit_rm::sync::aggregate;
pub mod api;
pub mod bench;
pub mod config;
pub mod cors;
pub mod db;
pub mod error;
pub mod extract;
pub mod headers;
pub mod limits;
pub mod models;
pub mod parse_errors;
pub mod privacy;
pub mod rounds;
pub mod secagg;
pub mod serve;
pub mod tokens;
pub mod updates;

/// Milliseconds since the Unix epoch: the timestamps stored in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
