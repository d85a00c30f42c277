//! Every error code the server answers, with malformed and truncated safetensors, NaN deltas
//! and norms over the bound; and after all of them, nothing stored and nothing changed.

mod common;

use common::*;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::protocol::{self, UpdateAccepted};
use tacit_rm::{Head, HeadConfig};

fn every_error_code(backend: Backend) {
    let Some(db) = database(backend, "errors") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let carol = token(&db.url, "carol", false);
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "1",
            "--max-staleness",
            "1",
            "--max-update-norm",
            "1.0",
            "--body-limit",
            "4096",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 3).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let served_before = pull(&server, &alice, "m");
    let good = |base_version: u64| delta(&config, values(n, 9, 0.01), base_version, 5);
    let good_bytes = good(1).to_bytes().unwrap();

    // 401: no token, an unknown token, a revoked token.
    assert_error(
        &request(
            &server,
            "POST",
            &protocol::updates_path("m"),
            &[(protocol::IDEMPOTENCY_KEY, "a")],
            good_bytes.clone(),
        ),
        401,
        "unauthorized",
    );
    assert_error(
        &push(&server, "tacit_nope", "m", "a", good_bytes.clone()),
        401,
        "unauthorized",
    );
    assert_error(
        &request(
            &server,
            "GET",
            &protocol::model_path("m"),
            &[("Authorization", "Basic xyz")],
            vec![],
        ),
        401,
        "unauthorized",
    );
    revoke(&db.url, "carol");
    assert_error(
        &push(&server, &carol, "m", "a", good_bytes.clone()),
        401,
        "unauthorized",
    );

    // 403: a client token cannot create or replace models.
    assert_error(&put_model(&server, &alice, "m", &base), 403, "forbidden");
    assert_error(
        &put_model(&server, &alice, "other", &base),
        403,
        "forbidden",
    );

    // 404: unknown model, invalid name, unknown route.
    assert_error(
        &push(&server, &alice, "nope", "a", good_bytes.clone()),
        404,
        "not_found",
    );
    assert_error(
        &request(
            &server,
            "GET",
            &protocol::model_path("nope"),
            &[("Authorization", &bearer(&alice))],
            vec![],
        ),
        404,
        "not_found",
    );
    assert_error(
        &request(
            &server,
            "GET",
            &protocol::meta_path("nope"),
            &[("Authorization", &bearer(&alice))],
            vec![],
        ),
        404,
        "not_found",
    );
    assert_error(
        &request(
            &server,
            "GET",
            "/v1/models/bad%20name",
            &[("Authorization", &bearer(&alice))],
            vec![],
        ),
        404,
        "not_found",
    );
    assert_error(
        &request(&server, "GET", "/v2/else", &[], vec![]),
        404,
        "not_found",
    );

    // 400: not safetensors, truncated safetensors, no idempotency key, a weights file
    // without the delta's metadata, zero examples, an unknown objective.
    assert_error(
        &push(
            &server,
            &alice,
            "m",
            "a",
            b"definitely not safetensors".to_vec(),
        ),
        400,
        "malformed",
    );
    for cut in [4, 8, 100, good_bytes.len() / 2, good_bytes.len() - 1] {
        assert_error(
            &push(&server, &alice, "m", "a", good_bytes[..cut].to_vec()),
            400,
            "malformed",
        );
    }
    assert_error(&push(&server, &alice, "m", "a", vec![]), 400, "malformed");
    assert_error(
        &request(
            &server,
            "POST",
            &protocol::updates_path("m"),
            &[("Authorization", &bearer(&alice))],
            good_bytes.clone(),
        ),
        400,
        "malformed",
    );
    let long_key = "k".repeat(protocol::MAX_IDEMPOTENCY_KEY + 1);
    assert_error(
        &push(&server, &alice, "m", &long_key, good_bytes.clone()),
        400,
        "malformed",
    );
    let plain_weights = store::to_bytes(&Weights::new(base.clone())).unwrap();
    assert_error(
        &push(&server, &alice, "m", "a", plain_weights),
        400,
        "malformed",
    );
    assert_error(
        &push(
            &server,
            &alice,
            "m",
            "a",
            delta(&config, values(n, 9, 0.01), 1, 0).to_bytes().unwrap(),
        ),
        400,
        "malformed",
    );
    let unknown_objective = String::from_utf8_lossy(&good_bytes).replace("\"ips\"", "\"zzz\"");
    assert_error(
        &push(&server, &alice, "m", "a", unknown_objective.into_bytes()),
        400,
        "malformed",
    );
    // Re-PUT of the same weights by the admin: allowed, version 2.
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    assert_error(&garbage_put(&server, &admin), 400, "malformed");

    // 409: other dims; a base version from the future.
    let other = HeadConfig::new(8, &[3]);
    let wrong_dims = delta(&other, values(other.num_params(), 1, 0.01), 2, 1);
    assert_error(
        &push(&server, &alice, "m", "a", wrong_dims.to_bytes().unwrap()),
        409,
        "dims_mismatch",
    );
    assert_error(
        &push(&server, &alice, "m", "a", good(99).to_bytes().unwrap()),
        409,
        "stale_base_version",
    );

    // 413: over the body limit.
    assert_error(
        &push(&server, &alice, "m", "a", vec![0u8; 5000]),
        413,
        "too_large",
    );
    let big = Head::init(&HeadConfig::new(64, &[16]), 1).unwrap();
    assert_error(&put_model(&server, &admin, "m", &big), 413, "too_large");

    // 422: NaN and infinity in a delta; a norm over the bound; NaN weights in a PUT.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut bytes = good(2).to_bytes().unwrap();
        let len = bytes.len();
        bytes[len - 4..].copy_from_slice(&bad.to_le_bytes()); // last value of the last tensor
        assert_error(&push(&server, &alice, "m", "a", bytes), 422, "non_finite");
    }
    let mut huge = good(2);
    huge.values.iter_mut().for_each(|v| *v = 1.0); // norm √41 > 1
    assert_error(
        &push(&server, &alice, "m", "a", huge.to_bytes().unwrap()),
        422,
        "norm_over_bound",
    );
    let mut nan_weights = store::to_bytes(&Weights::new(base.clone())).unwrap();
    let len = nan_weights.len();
    nan_weights[len - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_error(
        &request(
            &server,
            "PUT",
            &protocol::model_path("m"),
            &[("Authorization", &bearer(&admin))],
            nan_weights,
        ),
        422,
        "non_finite",
    );

    // Nothing half-written by any of the above: the re-PUT above made version 2, and no
    // update was stored.
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.accepted_updates, m.pending_updates, m.rounds),
        (2, 0, 0, 0)
    );
    assert_eq!(pull(&server, &alice, "m").head, served_before.head);

    // Valid pushes close a round each (--round-updates 1): versions 3, then 4.
    let first = push(&server, &alice, "m", "first", good(2).to_bytes().unwrap());
    assert_eq!(
        first.status,
        202,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let answer: UpdateAccepted = serde_json::from_slice(&first.body).unwrap();
    assert_eq!((answer.base_version, answer.n_examples), (2, 5));
    assert_eq!(
        push(&server, &alice, "m", "second", good(3).to_bytes().unwrap()).status,
        202
    );
    assert_eq!(meta(&server, &admin, "m").version, 4);
    // 409: base 2 is now two versions behind, over --max-staleness 1.
    assert_error(
        &push(&server, &alice, "m", "third", good(2).to_bytes().unwrap()),
        409,
        "stale_base_version",
    );
    // 409: a used key with another body; the same body replays the first answer exactly,
    // although its base has gone stale since.
    assert_error(
        &push(&server, &alice, "m", "first", good(3).to_bytes().unwrap()),
        409,
        "idempotency_key_reused",
    );
    let replay = push(&server, &alice, "m", "first", good(2).to_bytes().unwrap());
    assert_eq!((replay.status, &replay.body), (202, &first.body));
    let m = meta(&server, &admin, "m");
    assert_eq!((m.version, m.accepted_updates, m.rounds), (4, 2, 2));
}

fn garbage_put(server: &Server, admin: &str) -> tacit_rm::sync::HttpResponse {
    request(
        server,
        "PUT",
        &protocol::model_path("m"),
        &[("Authorization", &bearer(admin))],
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage".to_vec(),
    )
}

/// A method the route does not answer: 405 with a JSON code, like every other refusal.
#[test]
fn wrong_methods_answer_json() {
    let db = database(Backend::Sqlite, "errors_405").unwrap();
    let server = Server::start(&db.url, &[]);
    let answer = raw_exchange(
        &server,
        b"DELETE /v1/models/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.contains("\"code\":\"method_not_allowed\""),
        "{answer}"
    );
}

on_both_backends!(every_error_code);

/// Headers over the server's limits (more than 100 of them, or more than 64 KiB in all):
/// 431 with a JSON code like every other refusal, not hyper's empty answer.
#[test]
fn headers_over_the_limits_answer_json() {
    let db = database(Backend::Sqlite, "errors_431").unwrap();
    let server = Server::start(&db.url, &[]);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(100 << 10));
    for (what, extra) in [("150 headers", many), ("100 KiB of headers", big)] {
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
        let answer = raw_exchange(
            &server,
            request.as_bytes(),
            std::time::Duration::from_secs(10),
        );
        assert!(answer.starts_with("HTTP/1.1 431"), "{what}: {answer:.200}");
        assert!(
            answer.contains("\"code\":\"headers_too_large\""),
            "{what}: {answer:.300}"
        );
    }
    // Within the limits the same route answers.
    let fine: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fine}Connection: close\r\n\r\n");
    let answer = raw_exchange(
        &server,
        request.as_bytes(),
        std::time::Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}

/// What hyper refuses while it parses — a request line or header it cannot read, headers
/// past its own (raised) limits, an over-long URI — is answered like every other refusal:
/// a status and a JSON `{code, message}`, not hyper's empty body. The connection closes
/// after it (hyper cannot tell where the next request would start).
#[test]
fn requests_hyper_cannot_parse_answer_json() {
    let db = database(Backend::Sqlite, "errors_unparsable").unwrap();
    let server = Server::start(&db.url, &[]);
    let thousand: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), "400", "bad_request"),
        (
            "a header name with a space",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".to_vec(),
            "400",
            "bad_request",
        ),
        (
            "an unknown HTTP version",
            b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            "400",
            "bad_request",
        ),
        (
            "1000 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{thousand}\r\n").into_bytes(),
            "431",
            "headers_too_large",
        ),
        (
            "a 70 000-byte URI",
            long_uri.into_bytes(),
            "414",
            "uri_too_long",
        ),
    ];
    for (what, request, status, code) in cases {
        let answer = raw_exchange(&server, &request, std::time::Duration::from_secs(10));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {answer:.300}"
        );
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("\r\ncontent-type: application/json\r\n"),
            "{what}: {answer:.300}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{what}: {answer:.300}");
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(json["code"], code, "{what}: {body}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // The server still answers afterwards.
    let answer = raw_exchange(
        &server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}
