//! Bearer tokens: 32 random bytes from the OS, shown once at creation; only their SHA-256 is
//! stored, so a leaked database does not leak credentials. (A fast hash is enough for
//! 256-bit random secrets: there is nothing to brute-force.) Revocation marks the rows, so
//! that the history of who pushed what stays readable.

use sha2::{Digest, Sha256};

use crate::db::Db;

/// Every token starts with this, so that one is recognisable in a config file or a leak scan.
pub const PREFIX: &str = "tacit_";

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client: String,
    pub admin: bool,
}

pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Client names: what idempotency keys are scoped by and what logs show.
pub fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Creates a token for `client` and returns it (the only time it exists in clear).
pub async fn create(db: &Db, client: &str, admin: bool) -> Result<String, String> {
    if !valid_client_name(client) {
        return Err(format!(
            "client name '{client}' must be 1-128 characters of [A-Za-z0-9._@-]"
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no OS randomness: {e}"))?;
    let token = format!("{PREFIX}{}", hex(&secret));
    sqlx::query(
        "INSERT INTO tokens (client, token_sha256, admin, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(client)
    .bind(hash(&token))
    .bind(i64::from(admin))
    .bind(crate::now_ms())
    .execute(&db.pool)
    .await
    .map_err(|e| format!("cannot store the token: {e}"))?;
    Ok(token)
}

/// Revokes every live token of `client`; returns how many.
pub async fn revoke(db: &Db, client: &str) -> Result<u64, String> {
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE client = $2 AND revoked_at IS NULL")
        .bind(crate::now_ms())
        .bind(client)
        .execute(&db.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| format!("cannot revoke: {e}"))
}

/// The principal of a live token, `None` for an unknown or revoked one.
pub async fn verify(db: &Db, token: &str) -> Result<Option<Principal>, sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT client, admin FROM tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok(Principal {
            client: r.try_get("client")?,
            admin: r.try_get::<i64, _>("admin")? != 0,
        })
    })
    .transpose()
}
