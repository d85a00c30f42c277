//! The two databases' schemas agree column by column: the migrations applied by the server
//! to a fresh SQLite file and to a fresh Postgres database yield the same tables, the same
//! columns in the same order, the same nullability and corresponding types.

mod common;

use common::*;
use sqlx::Row;

/// (table, column, type, not null), in table and column order.
type Column = (String, String, String, bool);

/// SQLite's declared type as the Postgres type it stands for (SQLite's INTEGER is 64 bits).
fn canonical_sqlite_type(declared: &str) -> String {
    match declared {
        "INTEGER" | "BIGINT" => "bigint",
        "TEXT" => "text",
        "BLOB" => "bytea",
        "DOUBLE PRECISION" => "double precision",
        other => panic!("a column type the schema should not use: {other}"),
    }
    .to_string()
}

async fn migrated(url: &str) -> sqlx::AnyPool {
    tacit_server::db::connect(url, 1)
        .await
        .expect("migrate")
        .pool
}

async fn sqlite_columns(url: &str) -> Vec<Column> {
    let pool = migrated(url).await;
    let rows = sqlx::query(
        "SELECT m.name AS tbl, p.name AS col, p.type AS ty, p.\"notnull\" AS nn, p.pk AS pk \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let ty: String = r.get("ty");
            (
                r.get("tbl"),
                r.get("col"),
                canonical_sqlite_type(&ty),
                // A primary key is never null, whatever the pragma says of SQLite's rowid.
                r.get::<i64, _>("nn") != 0 || r.get::<i64, _>("pk") != 0,
            )
        })
        .collect()
}

async fn postgres_columns(url: &str) -> Vec<Column> {
    let pool = migrated(url).await;
    let rows = sqlx::query(
        "SELECT CAST(table_name AS TEXT) AS tbl, CAST(column_name AS TEXT) AS col, \
           CAST(data_type AS TEXT) AS ty, CAST(is_nullable AS TEXT) AS nullable \
         FROM information_schema.columns WHERE table_schema = 'public' \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.get("tbl"),
                r.get("col"),
                r.get("ty"),
                r.get::<String, _>("nullable") == "NO",
            )
        })
        .collect()
}

#[test]
fn sqlite_and_postgres_schemas_agree_column_by_column() {
    let Some(pg) = database(Backend::Postgres, "schema") else {
        return;
    };
    let lite = database(Backend::Sqlite, "schema").unwrap();
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sqlite, postgres) = runtime.block_on(async {
        (
            sqlite_columns(&format!("{}?mode=rwc", lite.url)).await,
            postgres_columns(&pg.url).await,
        )
    });
    assert!(sqlite.len() > 20, "{sqlite:?}");
    assert!(sqlite.iter().any(|c| c.1 == "deltas_purged_through"));
    assert!(sqlite
        .iter()
        .any(|c| c.0 == "token_models" && c.1 == "model" && c.3));
    // Migration 4: the DP accountant, `exhausted_at` nullable.
    assert!(sqlite
        .iter()
        .any(|c| c.0 == "model_privacy" && c.1 == "exhausted_at" && !c.3));
    for (s, p) in sqlite.iter().zip(&postgres) {
        assert_eq!(s, p);
    }
    assert_eq!(sqlite.len(), postgres.len());
}
