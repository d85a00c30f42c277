//! Connections and migrations. One code path serves SQLite and Postgres through sqlx's `Any`
//! driver with runtime queries; the few statements that differ (column types, row locks)
//! are chosen by [`Backend`].
//!
//! SQLite: WAL journal, `synchronous = FULL` (a commit is on disk before it returns, so a
//! 202 survives SIGKILL and power loss), and one connection: SQLite has one writer anyway,
//! and a single connection rules out the lock-upgrade deadlocks of concurrent deferred
//! transactions. Postgres: a pool, each connection with `synchronous_commit` at least `on` (a
//! commit is in the WAL on disk before it returns, whatever the operator's default); replicas
//! coordinate through row locks (see `rounds`).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::{Connection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// `SELECT … FOR UPDATE` where the database has row locks; SQLite's single writer
    /// connection already serialises transactions.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// Parses `sqlite://FILE`, `sqlite:FILE` or `postgres://…` / `postgresql://…`.
pub fn backend_of(url: &str) -> Result<Backend, String> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(format!(
            "database URL must start with sqlite:// or postgres:// (got '{}')",
            url.split(':').next().unwrap_or("")
        ))
    }
}

/// Connects, applies pending migrations, and returns the pool.
pub async fn connect(url: &str, pool_size: u32) -> Result<Db, String> {
    sqlx::any::install_default_drivers();
    let backend = backend_of(url)?;
    let (url, size) = match backend {
        // Create the file on first use, as a zero-set-up default should.
        Backend::Sqlite if !url.contains('?') => (format!("{url}?mode=rwc"), 1),
        Backend::Sqlite => (url.to_string(), 1),
        Backend::Postgres => (url.to_string(), pool_size.max(1)),
    };
    let mut options = AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(30));
    if backend == Backend::Sqlite {
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(())
            })
        });
    }
    if backend == Backend::Postgres {
        // A 202 is sent after the commit returned: that promise needs the commit flushed to
        // the WAL first. An operator's `synchronous_commit = off` (server, database or role
        // default) would acknowledge commits that a crash then loses, so every connection
        // raises it to `on`; the stronger settings (`remote_write`, `remote_apply`) and
        // `local` (flushed locally, not waiting for standbys) already flush and are kept.
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                let current: String =
                    sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                        .fetch_one(&mut *conn)
                        .await?;
                if current == "off" {
                    conn.execute("SET synchronous_commit = on").await?;
                }
                Ok(())
            })
        });
    }
    let pool = options
        .connect(&url)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let db = Db { pool, backend };
    migrate(&db)
        .await
        .map_err(|e| format!("cannot migrate the database: {e}"))?;
    Ok(db)
}

/// Schema migrations, in order; each is applied once, in a transaction with its record.
/// Append only: an applied migration is never edited. One text serves both databases: the
/// only types that differ are written as placeholders, filled in by [`Backend::render`].
const MIGRATIONS: &[(i64, &str)] = &[
    (1, SCHEMA_V1),
    (2, SCHEMA_V2),
    (3, SCHEMA_V3),
    (4, SCHEMA_V4),
    (5, SCHEMA_V5),
];

/// Placeholders of the schema text: a binary column and an auto-increment primary key.
const BLOB: &str = "{blob}";
const SERIAL_ID: &str = "{serial_id}";

impl Backend {
    fn blob(self) -> &'static str {
        match self {
            Backend::Sqlite => "BLOB",
            Backend::Postgres => "BYTEA",
        }
    }

    fn serial_id(self) -> &'static str {
        match self {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }

    /// The schema text with this database's types.
    pub fn render(self, schema: &str) -> String {
        schema
            .replace(BLOB, self.blob())
            .replace(SERIAL_ID, self.serial_id())
    }
}

const SCHEMA_V1: &str = "
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    shape TEXT NOT NULL,
    num_params BIGINT NOT NULL,
    weights {blob} NOT NULL,
    rounds BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE updates (
    id {serial_id},
    model TEXT NOT NULL,
    client TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    base_version BIGINT NOT NULL,
    n_examples BIGINT NOT NULL,
    objective TEXT NOT NULL,
    norm DOUBLE PRECISION NOT NULL,
    delta {blob} NOT NULL,
    status TEXT NOT NULL,
    round BIGINT,
    received_at BIGINT NOT NULL,
    UNIQUE (model, client, idempotency_key)
);
CREATE INDEX updates_pending ON updates (model, status);
CREATE TABLE rounds (
    model TEXT NOT NULL,
    round BIGINT NOT NULL,
    version BIGINT NOT NULL,
    n_updates BIGINT NOT NULL,
    n_examples BIGINT NOT NULL,
    aggregator TEXT NOT NULL,
    closed_at BIGINT NOT NULL,
    PRIMARY KEY (model, round)
);
CREATE TABLE tokens (
    id {serial_id},
    client TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    admin BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
";

/// Per-client rate limits read a client's recent pushes; retention empties the deltas of
/// aggregated rounds, once, up to `deltas_purged_through`.
const SCHEMA_V2: &str = "
CREATE INDEX updates_by_client ON updates (client, received_at);
CREATE INDEX updates_by_round ON updates (model, round);
ALTER TABLE models ADD COLUMN deltas_purged_through BIGINT NOT NULL DEFAULT 0
";

/// Per-model token scopes: a token with rows here may use those models only; a token
/// without any (every token of a database migrated from version 2) keeps using every model.
/// A table rather than a list column, so that the check is an exact match in SQL.
const SCHEMA_V3: &str = "
CREATE TABLE token_models (
    token_id BIGINT NOT NULL REFERENCES tokens (id),
    model TEXT NOT NULL,
    PRIMARY KEY (token_id, model)
)
";

/// The privacy accountant of each model under DP (`crate::privacy`): the parameters its
/// rounds were released with and how many; `exhausted_at` is set while the budget refuses the
/// next round. A model without a row has released nothing under DP.
const SCHEMA_V4: &str = "
CREATE TABLE model_privacy (
    model TEXT PRIMARY KEY,
    noise_multiplier DOUBLE PRECISION NOT NULL,
    sampling_rate DOUBLE PRECISION NOT NULL,
    delta DOUBLE PRECISION NOT NULL,
    budget_epsilon DOUBLE PRECISION NOT NULL,
    rounds BIGINT NOT NULL,
    exhausted_at BIGINT,
    updated_at BIGINT NOT NULL
)
";

/// Secure-aggregation rounds (`crate::secagg`): a round's parameters (JSON of
/// `RoundParams`), phase and outcome; its members' public keys, whether each shared and sent
/// its input (U2, U3), the masked input and the unmask answer (both emptied when the round
/// ends); and the encrypted shares relayed between members (deleted when it ends). Nothing
/// here is an unmasked delta.
const SCHEMA_V5: &str = "
CREATE TABLE secagg_rounds (
    model TEXT NOT NULL,
    round BIGINT NOT NULL,
    phase TEXT NOT NULL,
    params TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    phase_started_at BIGINT NOT NULL,
    failure TEXT,
    released_version BIGINT,
    PRIMARY KEY (model, round)
);
CREATE TABLE secagg_members (
    model TEXT NOT NULL,
    round BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    client TEXT NOT NULL,
    cipher_pk TEXT NOT NULL,
    mask_pk TEXT NOT NULL,
    seed_commitment TEXT NOT NULL,
    shared BIGINT NOT NULL,
    survivor BIGINT NOT NULL,
    masked_input {blob},
    unmask TEXT,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (model, round, idx),
    UNIQUE (model, round, client)
);
CREATE TABLE secagg_shares (
    model TEXT NOT NULL,
    round BIGINT NOT NULL,
    from_idx BIGINT NOT NULL,
    to_idx BIGINT NOT NULL,
    ciphertext TEXT NOT NULL,
    PRIMARY KEY (model, round, from_idx, to_idx)
)
";

async fn migrate(db: &Db) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    if db.backend == Backend::Postgres {
        // Replicas starting together: one migrates, the others wait here and then find the
        // work done. The lock is released with the transaction.
        sqlx::query("SELECT pg_advisory_xact_lock(7357001)")
            .execute(&mut *tx)
            .await?;
    }
    tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        .await?;
    for &(version, schema) in MIGRATIONS {
        let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if applied {
            continue;
        }
        let script = db.backend.render(schema);
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            tx.execute(statement).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "applied migration");
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two databases' schemas differ in the placeholder types only: every placeholder
    /// is filled, and blanking the filled types leaves the same text.
    #[test]
    fn one_schema_text_renders_for_both_databases() {
        for &(_, schema) in MIGRATIONS {
            let sqlite = Backend::Sqlite.render(schema);
            let postgres = Backend::Postgres.render(schema);
            for rendered in [&sqlite, &postgres] {
                assert!(
                    !rendered.contains('{') && !rendered.contains('}'),
                    "{rendered}"
                );
            }
            let blank = |text: &str, backend: Backend| {
                text.replace(backend.serial_id(), "ID")
                    .replace(backend.blob(), "B")
            };
            assert_eq!(
                blank(&sqlite, Backend::Sqlite),
                blank(&postgres, Backend::Postgres)
            );
        }
        assert!(Backend::Sqlite
            .render(SCHEMA_V1)
            .contains("delta BLOB NOT NULL"));
        assert!(Backend::Postgres
            .render(SCHEMA_V1)
            .contains("id BIGSERIAL PRIMARY KEY,"));
    }
}
