//! Per-model token scopes (`token create --model`): a scoped token reads and pushes its own
//! models and gets 403 `model_forbidden` on any other (existing or not) with nothing stored;
//! unscoped and admin tokens are unaffected; the scope survives a restart; a database from
//! before scopes (schema version 2) is migrated, its tokens staying unscoped.

mod common;

use common::*;
use tacit_rm::sync::protocol;
use tacit_rm::Head;

fn get(server: &Server, token: &str, path: &str) -> tacit_rm::sync::HttpResponse {
    request(
        server,
        "GET",
        path,
        &[("Authorization", &bearer(token))],
        vec![],
    )
}

fn scoped_tokens_use_their_models_only(backend: Backend) {
    let Some(db) = database(backend, "scopes") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = scoped_token(&db.url, "alice", &["m"]);
    let both = scoped_token(&db.url, "bea", &["m", "other", "m"]);
    let carl = token(&db.url, "carl", false);
    let mut server = Server::start(&db.url, &["--round-updates", "100"]);
    let config = small_config();
    let head = Head::init(&config, 1).unwrap();
    for name in ["m", "other"] {
        assert_eq!(put_model(&server, &admin, name, &head).status, 200);
    }
    let body = |seed: u64| {
        delta(&config, values(config.num_params(), seed, 0.01), 1, 2)
            .to_bytes()
            .unwrap()
    };

    let check = |server: &Server, round: &str| {
        // Its own model: meta, pull and push work.
        assert_eq!(meta(server, &alice, "m").version, 1);
        assert_eq!(pull(server, &alice, "m").version, 1);
        let key = format!("alice-{round}");
        let r = push(server, &alice, "m", &key, body(1));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        // Another model, existing or not: 403 model_forbidden for reads and pushes alike.
        for name in ["other", "ghost"] {
            assert_error(
                &get(server, &alice, &protocol::meta_path(name)),
                403,
                "model_forbidden",
            );
            assert_error(
                &get(server, &alice, &protocol::model_path(name)),
                403,
                "model_forbidden",
            );
            assert_error(
                &push(server, &alice, name, &format!("{key}-{name}"), body(2)),
                403,
                "model_forbidden",
            );
        }
        // Scoped to its models, not an admin: creating a model of its own scope still needs one.
        assert_error(&put_model(server, &alice, "m", &head), 403, "forbidden");
        // A token scoped to several models uses each of them.
        for name in ["m", "other"] {
            assert_eq!(meta(server, &both, name).version, 1);
            let r = push(server, &both, name, &format!("bea-{round}"), body(3));
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        }
        assert_error(
            &get(server, &both, &protocol::meta_path("third")),
            403,
            "model_forbidden",
        );
        // Unscoped client and admin tokens: every model, as before (404 for a missing one).
        for token in [&carl, &admin] {
            assert_eq!(meta(server, token, "other").version, 1);
            assert_error(
                &get(server, token, &protocol::meta_path("ghost")),
                404,
                "not_found",
            );
        }
        let r = push(server, &carl, "other", &format!("carl-{round}"), body(4));
        assert_eq!(r.status, 202);
    };
    check(&server, "first");
    // Nothing of alice's refused pushes was stored.
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM updates WHERE client = 'alice' AND model <> 'm'"
        ),
        0
    );
    // The scope is stored, not remembered by the process.
    server.kill();
    server.restart();
    check(&server, "second");
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM updates WHERE client = 'alice'"
        ),
        2
    );
    // A revoked scoped token is unknown (401), not forbidden.
    revoke(&db.url, "alice");
    assert_error(
        &get(&server, &alice, &protocol::meta_path("other")),
        401,
        "unauthorized",
    );
}

/// A database created before scopes existed: its tokens keep every model, and scoped tokens
/// can be created once the server (or `token create`) has migrated it.
fn a_database_from_before_scopes_is_migrated(backend: Backend) {
    let Some(db) = database(backend, "scopes_migration") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let old = token(&db.url, "old", false);
    // Back to schema version 2: no scope table, no record of migration 3.
    execute(&db.url, "DROP TABLE token_models");
    execute(&db.url, "DELETE FROM schema_migrations WHERE version = 3");
    let server = Server::start(&db.url, &[]);
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM schema_migrations WHERE version = 3"
        ),
        1
    );
    let head = Head::init(&small_config(), 1).unwrap();
    for name in ["m", "other"] {
        assert_eq!(put_model(&server, &admin, name, &head).status, 200);
        assert_eq!(meta(&server, &old, name).version, 1);
    }
    let scoped = scoped_token(&db.url, "new", &["m"]);
    assert_eq!(meta(&server, &scoped, "m").version, 1);
    assert_error(
        &get(&server, &scoped, &protocol::meta_path("other")),
        403,
        "model_forbidden",
    );
}

on_both_backends!(
    scoped_tokens_use_their_models_only,
    a_database_from_before_scopes_is_migrated
);

/// `token create` refuses a scope it could not honour, and stores nothing then.
#[test]
fn token_create_refuses_bad_scopes() {
    let db = database(Backend::Sqlite, "scopes_cli").unwrap();
    for (extra, says) in [
        (&["--model", "no spaces"][..], "model name"),
        (&["--model", ""][..], "model name"),
        (&["--admin", "--model", "m"][..], "--admin"),
    ] {
        let out = token_command(&db.url, "alice", extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "{extra:?}");
    }
    // `--admin --model` is refused by the argument parser, before the database is opened;
    // the model-name refusals open (and migrate) it and store no token.
    assert_eq!(
        query_i64(
            &format!("{}?mode=rwc", db.url),
            "SELECT CAST(COUNT(*) AS BIGINT) FROM tokens"
        ),
        0
    );
}
