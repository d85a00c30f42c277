//! The sans-IO sync client against a scripted server: the queue, idempotency keys fixed
//! through retries, exponential backoff, rebasing on a newer global, relabelling after a
//! stale-base refusal, error mapping and the queue policy; and the sync pass's scenarios of
//! `sync_scenario` (also run in the browser by `tests/web_sync.rs`). No network: responses
//! are built here.
#![cfg(not(target_arch = "wasm32"))]

mod sync_scenario;

use sync_scenario::{accepted, global, ips, refusal as error, trained};
use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::client::{backoff_ms, HttpResponse, PullOutcome, PushOutcome};
use tacit_rm::sync::delta::{self, Delta};
use tacit_rm::sync::protocol;
use tacit_rm::sync::{SyncClient, SyncConfig, SyncState};

fn client(global: &Weights) -> SyncClient {
    SyncClient::new(sync_scenario::config(), global.clone(), vec![], "inst", 0).unwrap()
}

/// The server's answer to a pull: `global`'s bytes.
fn served(global: &Weights) -> Result<HttpResponse, String> {
    Ok(HttpResponse {
        status: 200,
        etag: None,
        body: store::to_bytes(global).unwrap(),
    })
}

fn header<'a>(req: &'a tacit_rm::sync::HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_queued_push_keeps_its_key_and_body_through_retries_with_backoff() {
    let g = global(1, 1);
    let mut c = client(&g);
    let local = trained(&g.head, 2);
    let key = c.commit_local(&local, 5, ips(), 0).unwrap().unwrap();
    // The queued body is local − base, with the protocol's metadata.
    let first = c.due_push(0).unwrap();
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, protocol::updates_path("m"));
    assert_eq!(
        header(&first, protocol::IDEMPOTENCY_KEY),
        Some(key.as_str())
    );
    assert_eq!(header(&first, "Authorization"), Some("Bearer tok"));
    let sent = Delta::from_bytes(&first.body).unwrap();
    assert_eq!(sent.values, delta::difference(&local, &g.head).unwrap());
    assert_eq!((sent.base_version, sent.n_examples), (1, 5));

    // Offline, then 503, then 429: the same bytes and key each time, 100, 200, 400 ms later.
    let mut now = 0;
    for (i, failure) in [Err("offline".to_string()), error(503, "x"), error(429, "x")]
        .into_iter()
        .enumerate()
    {
        let outcome = c.on_push_response(failure, now).unwrap();
        let wait = 100 << i;
        assert_eq!(
            outcome,
            PushOutcome::Retry {
                retry_at_ms: now + wait,
                reason: outcome_reason(&outcome)
            }
        );
        assert!(
            c.due_push(now + wait - 1).is_none(),
            "not before the backoff"
        );
        let again = c.due_push(now + wait).unwrap();
        assert_eq!(again, first);
        now += wait;
    }
    assert!(matches!(
        c.on_push_response(accepted(9), now).unwrap(),
        PushOutcome::Accepted(a) if a.update_id == 9
    ));
    assert!(c.queue().is_empty() && c.due_push(u64::MAX).is_none());
    // Nothing changed since: nothing more to push (never the same update twice).
    assert_eq!(c.commit_local(&local, 5, ips(), now).unwrap(), None);
}

fn outcome_reason(o: &PushOutcome) -> String {
    match o {
        PushOutcome::Retry { reason, .. } => reason.clone(),
        _ => String::new(),
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let got: Vec<u64> = (1..=6).map(|a| backoff_ms(100, 1000, a)).collect();
    assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff_ms(100, 1000, u32::MAX), 1000);
}

#[test]
fn the_queue_survives_a_restart_and_keys_are_never_reused() {
    let g = global(1, 1);
    let mut c = client(&g);
    let first = trained(&g.head, 2);
    let k1 = c.commit_local(&first, 1, ips(), 0).unwrap().unwrap();
    let second = trained(&first, 3);
    let k2 = c.commit_local(&second, 2, ips(), 0).unwrap().unwrap();
    assert_ne!(k1, k2);
    // Persist (as IndexedDB or a file would: the one stored form), restore, continue.
    let record = c.state().to_record().unwrap();
    assert_eq!(record.bodies.len(), 2);
    assert!(
        !record.state.contains("body"),
        "bodies are stored as bytes, apart"
    );
    let mut restored =
        SyncClient::from_state(c.config().clone(), SyncState::from_record(record).unwrap())
            .unwrap();
    assert_eq!(restored.state(), c.state());
    assert_eq!(restored.queue()[1].key, k2);
    // The two pushes go in order: the second carries only what changed after the first.
    let p1 = Delta::from_bytes(&restored.due_push(0).unwrap().body).unwrap();
    assert_eq!(p1.values, delta::difference(&first, &g.head).unwrap());
    restored.on_push_response(accepted(1), 0).unwrap();
    let p2 = Delta::from_bytes(&restored.due_push(0).unwrap().body).unwrap();
    assert_eq!(p2.values, delta::difference(&second, &first).unwrap());
    restored.on_push_response(accepted(2), 0).unwrap();
    let third = trained(&second, 4);
    let k3 = restored.commit_local(&third, 1, ips(), 0).unwrap().unwrap();
    assert!(k3 != k1 && k3 != k2);
}

#[test]
fn pulling_a_newer_global_rebases_the_unpushed_changes() {
    let g1 = global(1, 1);
    let mut c = client(&g1);
    let pushed = trained(&g1.head, 2);
    c.commit_local(&pushed, 1, ips(), 0).unwrap();
    c.on_push_response(accepted(1), 0).unwrap();
    // More training after the push, not yet committed.
    let mut local = trained(&pushed, 3);
    let unpushed = delta::difference(&local, &pushed).unwrap();
    // The pull asks conditionally for the version it has.
    let req = c.pull_request();
    assert_eq!(
        header(&req, "If-None-Match"),
        Some(protocol::etag(1).as_str())
    );
    let not_modified = Ok(HttpResponse {
        status: 304,
        etag: Some(protocol::etag(1)),
        body: vec![],
    });
    let before = local.clone();
    assert_eq!(
        c.on_pull_response(not_modified, &mut local).unwrap(),
        PullOutcome::Unchanged
    );
    assert_eq!(local, before);
    let g2 = global(2, 7);
    let newer = Ok(HttpResponse {
        status: 200,
        etag: Some(protocol::etag(2)),
        body: store::to_bytes(&g2).unwrap(),
    });
    assert_eq!(
        c.on_pull_response(newer, &mut local).unwrap(),
        PullOutcome::Updated { version: 2 }
    );
    let expected: Vec<f32> = g2
        .head
        .to_flat()
        .iter()
        .zip(&unpushed)
        .map(|(g, u)| g + u)
        .collect();
    for (a, b) in local.to_flat().iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6);
    }
    assert_eq!(c.base_version(), 2);
    // Committing now pushes exactly the unpushed part, based on version 2.
    c.commit_local(&local, 1, ips(), 0).unwrap();
    let d = Delta::from_bytes(&c.due_push(0).unwrap().body).unwrap();
    assert_eq!(d.base_version, 2);
    for (a, b) in d.values.iter().zip(&unpushed) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn a_stale_base_refusal_is_relabelled_onto_the_next_global_with_a_new_key() {
    let g1 = global(1, 1);
    let mut c = client(&g1);
    let mut local = trained(&g1.head, 2);
    let old_key = c.commit_local(&local, 3, ips(), 0).unwrap().unwrap();
    let body_before = Delta::from_bytes(&c.queue()[0].body).unwrap();
    assert_eq!(
        c.on_push_response(error(409, "stale_base_version"), 0)
            .unwrap(),
        PushOutcome::NeedsRebase
    );
    assert!(c.due_push(u64::MAX).is_none(), "waits for a pull");
    let g5 = global(5, 9);
    let newer = served(&g5);
    c.on_pull_response(newer, &mut local).unwrap();
    let req = c.due_push(0).unwrap();
    let relabelled = Delta::from_bytes(&req.body).unwrap();
    assert_eq!(relabelled.base_version, 5);
    assert_eq!(relabelled.values, body_before.values);
    assert_ne!(
        header(&req, protocol::IDEMPOTENCY_KEY),
        Some(old_key.as_str())
    );
}

#[test]
fn refusals_map_to_stable_codes_and_the_queue_policy() {
    let g = global(1, 1);
    let cases = [
        (401, "unauthorized", "sync_unauthorized", 1usize),
        (403, "forbidden", "sync_unauthorized", 1),
        (409, "dims_mismatch", "sync_conflict", 0),
        (422, "norm_over_bound", "sync_rejected", 0),
        (400, "malformed", "sync_rejected", 0),
        // A model under secure aggregation: kept, for a secure round to take.
        (409, "secure_aggregation_required", "sync_conflict", 1),
    ];
    for (status, server_code, code, left) in cases {
        let mut c = client(&g);
        c.commit_local(&trained(&g.head, 2), 1, ips(), 0).unwrap();
        let err = c
            .on_push_response(error(status, server_code), 0)
            .unwrap_err();
        assert_eq!(err.code().as_str(), code, "{status}");
        assert_eq!(c.queue().len(), left, "{status}");
    }
    // Refusals a client can outlive keep the push, backed off: a model that does not exist
    // yet, rate limits, server failures, and statuses this client does not know.
    let transient = [
        (404, "not_found"),
        (408, "timeout"),
        (429, "rate_limited"),
        (500, "internal"),
        (503, "unavailable"),
        (405, "method_not_allowed"),
    ];
    for (status, server_code) in transient {
        let mut c = client(&g);
        c.commit_local(&trained(&g.head, 2), 1, ips(), 0).unwrap();
        let key = c.queue()[0].key.clone();
        match c.on_push_response(error(status, server_code), 0).unwrap() {
            PushOutcome::Retry {
                retry_at_ms,
                reason,
            } => {
                assert_eq!(retry_at_ms, 100, "{status}");
                assert!(reason.contains(&status.to_string()), "{reason}");
            }
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(
            (c.queue().len(), c.queue()[0].key.as_str()),
            (1, key.as_str())
        );
    }
    // The rest of the permanent ones: too large, non-finite.
    for (status, server_code) in [(413, "too_large"), (422, "non_finite")] {
        let mut c = client(&g);
        c.commit_local(&trained(&g.head, 2), 1, ips(), 0).unwrap();
        let err = c
            .on_push_response(error(status, server_code), 0)
            .unwrap_err();
        assert_eq!(err.code().as_str(), "sync_rejected");
        assert!(c.queue().is_empty(), "{status}");
    }
    // A pull from an unreachable server is a network error and leaves local alone.
    let mut c = client(&g);
    let mut local = trained(&g.head, 2);
    let before = local.clone();
    let err = c
        .on_pull_response(Err("refused".into()), &mut local)
        .unwrap_err();
    assert_eq!(err.code().as_str(), "network");
    assert_eq!(local, before);
    // A global of another shape is a conflict, not a silent replacement.
    let other = Weights {
        version: 3,
        ..Weights::new(Head::init(&HeadConfig::new(4, &[2]), 1).unwrap())
    };
    let err = c.on_pull_response(served(&other), &mut local).unwrap_err();
    assert_eq!(err.code().as_str(), "sync_conflict");
}

#[test]
fn commit_clips_and_keeps_the_clipped_remainder_for_later() {
    let g = global(1, 1);
    let mut cfg = SyncConfig::new("m", "tok");
    cfg.clip_norm = 0.01;
    let mut c = SyncClient::new(cfg, g.clone(), vec![], "inst", 0).unwrap();
    let local = trained(&g.head, 2);
    let full = delta::difference(&local, &g.head).unwrap();
    c.commit_local(&local, 1, ips(), 0).unwrap();
    let pushed = Delta::from_bytes(&c.queue()[0].body).unwrap();
    let norm = delta::l2_norm(&pushed.values);
    assert!((norm - 0.01).abs() < 1e-6, "{norm}");
    // Same direction as the full change.
    let scale = f64::from(pushed.values[0]) / f64::from(full[0]);
    for (p, f) in pushed.values.iter().zip(&full) {
        assert!((f64::from(*p) - scale * f64::from(*f)).abs() < 1e-6);
    }
    // The rest is still pending locally: the next commit offers more.
    assert!(c.commit_local(&local, 1, ips(), 0).unwrap().is_some());
}

#[test]
fn a_retry_accepted_then_the_pull_happens() {
    pollster::block_on(sync_scenario::a_retry_accepted_then_the_pull_happens());
}

#[test]
fn a_push_to_a_missing_model_stays_queued() {
    pollster::block_on(sync_scenario::a_push_to_a_missing_model_stays_queued());
}

#[test]
fn a_secure_model_never_gets_a_plain_delta() {
    pollster::block_on(sync_scenario::a_secure_model_never_gets_a_plain_delta());
}

#[test]
fn no_answer_on_the_aggregation_mode_sends_nothing() {
    pollster::block_on(sync_scenario::no_answer_on_the_aggregation_mode_sends_nothing());
}

#[test]
fn a_global_whose_version_js_cannot_hold_is_refused() {
    let g = global(1, 1);
    let mut c = client(&g);
    let mut local = g.head.clone();
    let huge = global(protocol::MAX_VERSION + 1, 3);
    let err = c.on_pull_response(served(&huge), &mut local).unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_data");
    assert_eq!((c.base_version(), &local), (1, &g.head));
}

#[test]
fn forget_takes_back_exactly_the_queued_deltas_the_reference_holds() {
    let g1 = global(1, 1);
    let mut c = client(&g1);
    let first = trained(&g1.head, 2);
    c.commit_local(&first, 3, ips(), 0).unwrap().unwrap();
    let second = trained(&first, 3);
    c.commit_local(&second, 2, ips(), 0).unwrap().unwrap();
    assert_eq!(c.queue().len(), 2);
    let mut state = c.state().clone();
    let back = state.forget().unwrap();
    assert!(state.queue.is_empty());
    assert_eq!(state.unsynced_examples, 0);
    // The reference returns to the global the two deltas were taken against (f32 rounding).
    let (got, want) = (back.head.to_flat(), g1.head.to_flat());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "forget left {worst} of the user's deltas");
    assert_eq!(back.version, 1);

    // A push still queued when a newer global arrives is no longer in the reference (which
    // becomes that global): forget must not subtract it from the new global.
    let mut c = client(&g1);
    let mut local = trained(&g1.head, 2);
    c.commit_local(&local, 3, ips(), 0).unwrap().unwrap();
    c.on_push_response(error(409, "stale_base_version"), 0)
        .unwrap();
    let g5 = global(5, 9);
    let newer = served(&g5);
    c.on_pull_response(newer, &mut local).unwrap();
    let mut state = c.state().clone();
    assert_eq!(state.queue.len(), 1);
    let back = state.forget().unwrap();
    assert_eq!(back.head.to_flat(), g5.head.to_flat());
    assert_eq!(back.version, 5);
    // The flag is stored with the queue: a restored state forgets the same way.
    let mut restored = SyncState::from_record(c.state().to_record().unwrap()).unwrap();
    assert_eq!(restored.forget().unwrap().head.to_flat(), g5.head.to_flat());
}

/// The secure round a queue is in flight in is part of the stored state: a restart learns it
/// (and so asks its outcome before offering those pushes again); a record without one (every
/// record written before secure aggregation) reads as none, and none is not written.
#[test]
fn a_secure_round_in_flight_survives_a_restart() {
    use tacit_rm::sync::secagg::session::InFlight;
    let g = global(1, 1);
    let mut c = client(&g);
    let key = c
        .commit_local(&trained(&g.head, 2), 1, ips(), 0)
        .unwrap()
        .unwrap();
    let plain = c.state().to_record().unwrap();
    assert!(!plain.state.contains("secureRound"), "{}", plain.state);
    assert_eq!(SyncState::from_record(plain).unwrap().secure_round, None);
    c.state_mut().secure_round = Some(InFlight {
        round: 7,
        index: 3,
        keys: vec![key.clone()],
    });
    let record = c.state().to_record().unwrap();
    assert!(
        record
            .state
            .contains(r#""secureRound":{"round":7,"index":3,"keys":["#),
        "{}",
        record.state
    );
    let restored = SyncState::from_record(record).unwrap();
    assert_eq!(&restored, c.state());
    assert_eq!(restored.secure_round.unwrap().keys, vec![key]);
}
