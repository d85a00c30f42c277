//! CORS (`--allow-origin`, `TACIT_ALLOW_ORIGINS`): preflights from allowed and other origins,
//! the headers of actual answers (successes and errors alike), the configuration's sources
//! and validation, and no CORS headers at all when no origin is configured.

mod common;

use common::*;
use tacit_rm::sync::protocol;
use tacit_rm::Head;

const APP: &str = "https://app.example";
const DEV: &str = "http://localhost:5173";
const EVIL: &str = "https://evil.example";

fn preflight(server: &Server, origin: &str, path: &str, method: &str) -> RawAnswer {
    raw_request(
        server,
        "OPTIONS",
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            ),
        ],
        &[],
    )
}

/// `Origin: origin` and the other headers of a request.
fn from<'a>(origin: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("Origin", origin)];
    headers.extend_from_slice(extra);
    headers
}

fn assert_no_cors(r: &RawAnswer) {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
    ] {
        assert_eq!(r.header(name), None, "{name} in {:?}", r.headers);
    }
}

fn allowed_origins_read_every_answer(backend: Backend) {
    let Some(db) = database(backend, "cors") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let server = Server::start(
        &db.url,
        &[
            "--allow-origin",
            APP,
            "--allow-origin",
            DEV,
            "--client-pushes-per-minute",
            "1",
            "--round-updates",
            "100",
        ],
    );
    let config = small_config();
    let head = Head::init(&config, 1).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &head).status, 200);
    let updates = protocol::updates_path("m");

    // Preflight from each allowed origin: 204, the origin echoed, what the client sends.
    for origin in [APP, DEV] {
        let r = preflight(&server, origin, &updates, "POST");
        assert_eq!(r.status, 204, "{:?}", r.headers);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(origin)
        );
        for method in ["GET", "PUT", "POST"] {
            assert!(r.lists("access-control-allow-methods", method), "{method}");
        }
        for name in [
            "authorization",
            "content-type",
            "idempotency-key",
            "if-none-match",
        ] {
            assert!(r.lists("access-control-allow-headers", name), "{name}");
        }
        assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
        assert!(r.lists("vary", "origin"));
        assert!(r.body.is_empty());
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
    // Any path is preflighted alike: the route answers the actual request.
    assert_eq!(
        preflight(&server, APP, &protocol::model_path("m"), "GET").status,
        204
    );

    // Preflight from another origin (or a near miss of an allowed one): 403 JSON, no CORS.
    for origin in [
        EVIL,
        "http://app.example",
        "https://app.example:8443",
        "null",
    ] {
        let r = preflight(&server, origin, &updates, "POST");
        assert_eq!(r.status, 403, "{origin}");
        assert_eq!(r.error_code(), "origin_not_allowed");
        assert_no_cors(&r);
        assert!(r.lists("vary", "origin"));
    }

    // Actual answers to an allowed origin carry the header, and expose what clients read.
    let bearer_alice = bearer(&alice);
    let send = |method: &str, path: &str, headers: Vec<(&str, &str)>, body: &[u8]| {
        raw_request(&server, method, path, &headers, body)
    };
    let r = send(
        "GET",
        &protocol::model_path("m"),
        from(APP, &[("Authorization", &bearer_alice)]),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(r.header("etag").is_some());
    for name in ["etag", "retry-after", "idempotent-replayed"] {
        assert!(r.lists("access-control-expose-headers", name), "{name}");
    }
    assert!(r.lists("vary", "origin"));
    let r = send(
        "GET",
        &protocol::meta_path("m"),
        from(DEV, &[("Authorization", &bearer_alice)]),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(DEV)
    );

    let body = delta(&config, values(config.num_params(), 3, 0.01), 1, 2)
        .to_bytes()
        .unwrap();
    let push_headers = |key: &'static str| {
        from(
            APP,
            &[
                ("Authorization", &bearer_alice),
                (protocol::IDEMPOTENCY_KEY, key),
                ("Content-Type", protocol::SAFETENSORS),
            ],
        )
    };
    let r = send("POST", &updates, push_headers("k1"), &body);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(r.header("idempotent-replayed").as_deref(), Some("false"));

    // Errors too: 429 (with the Retry-After the page may read), 401, 404, 405.
    let r = send("POST", &updates, push_headers("k2"), &body);
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limited");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(r.lists("access-control-expose-headers", "retry-after"));
    let r = send("GET", &protocol::meta_path("m"), from(APP, &[]), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    let r = send("GET", "/v2/nothing", from(APP, &[]), &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    // An OPTIONS that is no preflight (no Access-Control-Request-Method) is routed as today.
    let r = send("OPTIONS", &updates, from(APP, &[]), &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );

    // Another origin's actual request is answered (the token decides), without CORS headers,
    // so that its page cannot read the answer; so is a request without Origin (not a browser).
    let r = send(
        "GET",
        &protocol::meta_path("m"),
        from(EVIL, &[("Authorization", &bearer_alice)]),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_no_cors(&r);
    let r = raw_request(
        &server,
        "GET",
        &protocol::meta_path("m"),
        &[("Authorization", &bearer_alice)],
        &[],
    );
    assert_eq!(r.status, 200);
    assert_no_cors(&r);
}

on_both_backends!(allowed_origins_read_every_answer);

/// Without an origin configured nothing changes: no CORS header, and a preflight is what any
/// OPTIONS was before (405, JSON).
#[test]
fn no_origin_configured_sends_no_cors_headers() {
    let db = database(Backend::Sqlite, "cors_off").unwrap();
    let alice = token(&db.url, "alice", false);
    let server = Server::start(&db.url, &[]);
    let r = preflight(&server, APP, &protocol::updates_path("m"), "POST");
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_no_cors(&r);
    assert_eq!(r.header("vary"), None);
    let r = raw_request(
        &server,
        "GET",
        &protocol::meta_path("m"),
        &[("Origin", APP), ("Authorization", &bearer(&alice))],
        &[],
    );
    assert_eq!(r.status, 404);
    assert_no_cors(&r);
}

/// `TACIT_ALLOW_ORIGINS` is a comma-separated list (blanks around items ignored); a flag,
/// when given, replaces it rather than adding to it.
#[test]
fn the_environment_lists_origins_and_a_flag_replaces_it() {
    let db = database(Backend::Sqlite, "cors_env").unwrap();
    let list = format!("{APP}, {DEV} ,");
    let from_env = Server::start_with_env(&db.url, &[], &[("TACIT_ALLOW_ORIGINS", &list)]);
    let path = protocol::meta_path("m");
    for origin in [APP, DEV] {
        let r = preflight(&from_env, origin, &path, "GET");
        assert_eq!(r.status, 204, "{origin}");
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(origin)
        );
    }
    assert_eq!(preflight(&from_env, EVIL, &path, "GET").status, 403);
    drop(from_env);

    let flag_wins = Server::start_with_env(
        &db.url,
        &["--allow-origin", EVIL],
        &[("TACIT_ALLOW_ORIGINS", &list)],
    );
    let r = preflight(&flag_wins, EVIL, &path, "GET");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(EVIL)
    );
    for origin in [APP, DEV] {
        assert_eq!(preflight(&flag_wins, origin, &path, "GET").status, 403);
    }
}

/// `*` alone allows every origin, answered as `*` (no credentials mode: the token is a
/// header the page sets, which the preflight lists).
#[test]
fn the_wildcard_allows_every_origin() {
    let db = database(Backend::Sqlite, "cors_any").unwrap();
    let server = Server::start_with_env(&db.url, &[], &[("TACIT_ALLOW_ORIGINS", "*")]);
    let path = protocol::meta_path("m");
    for origin in [APP, EVIL, "null"] {
        let r = preflight(&server, origin, &path, "GET");
        assert_eq!(r.status, 204);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert!(r.lists("access-control-allow-headers", "authorization"));
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
    let r = raw_request(&server, "GET", &path, &[("Origin", EVIL)], &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
}

/// A malformed origin stops the server at start-up with a message naming it and the fix.
#[test]
fn malformed_origins_fail_at_start_up() {
    let db = database(Backend::Sqlite, "cors_bad").unwrap();
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--db", &db.url])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tacit-server serve")
    };
    for (args, env, says) in [
        (
            &["--allow-origin", "https://app.example/"][..],
            &[][..],
            "trailing '/'",
        ),
        (&["--allow-origin", "app.example"][..], &[][..], "no scheme"),
        (
            &["--allow-origin", "*", "--allow-origin", APP][..],
            &[][..],
            "alone",
        ),
        (
            &[][..],
            &[("TACIT_ALLOW_ORIGINS", "https://app.example:443")][..],
            "default port",
        ),
    ] {
        let out = serve(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(stderr.contains(says), "{args:?} {env:?}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    }
}
