//! The server's push handler, in process, over a real SQLite file: any body with any
//! idempotency key is answered with a status below 500 and a JSON body (a 202's receipt or
//! an error with a code), the round that a push closes included; never a panic or a 500.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tacit_rm::store::{self, Weights};
use tacit_rm::{Head, HeadConfig};
use tacit_server::api::{self, AppState};
use tacit_server::config::{Policy, Timeouts};
use tacit_server::{db, tokens};
use tower::ServiceExt;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    policy: Policy,
}

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Limits far above what a fuzz run reaches, so that inputs get past them to the
        // parser and the round code; every push closes a round.
        let Args { policy } = Args::parse_from([
            "fuzz",
            "--round-updates",
            "1",
            "--client-pushes-per-minute",
            "1000000000",
            "--client-pending-updates",
            "1000000000",
            "--max-pending-bytes",
            "1000000000000",
        ]);
        let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
        let (router, token) = runtime.block_on(async {
            let db = db::connect(&url, 1).await.unwrap();
            let admin = tokens::create(&db, "admin", true, &[]).await.unwrap();
            let token = tokens::create(&db, "fuzzer", false, &[]).await.unwrap();
            let state = Arc::new(AppState {
                db,
                policy,
                timeouts: Timeouts::default(),
            });
            let router = api::router(state);
            let weights = Weights::new(Head::init(&HeadConfig::new(4, &[3]), 1).unwrap());
            let put = Request::put("/v1/models/m")
                .header("authorization", format!("Bearer {admin}"))
                .body(Body::from(store::to_bytes(&weights).unwrap()))
                .unwrap();
            let answer = router.clone().oneshot(put).await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            (router, token)
        });
        Server {
            runtime,
            router,
            token,
            _dir: dir,
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let s = server();
    // The first byte picks the idempotency key among a few, so that replays and reused keys
    // (same key, other body) are reached too.
    let (key, body) = match input.split_first() {
        Some((k, rest)) => (format!("key-{}", k % 8), rest.to_vec()),
        None => ("key-empty".to_string(), Vec::new()),
    };
    let request = Request::post("/v1/models/m/updates")
        .header("authorization", format!("Bearer {}", s.token))
        .header("idempotency-key", key)
        .body(Body::from(body))
        .unwrap();
    let (status, bytes) = s.runtime.block_on(async {
        let answer = s.router.clone().oneshot(request).await.unwrap();
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes)
    });
    assert!(
        status.as_u16() < 500,
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
    if !status.is_success() {
        assert!(json.get("code").is_some_and(|c| c.is_string()), "{json}");
    }
});
