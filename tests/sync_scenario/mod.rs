//! Sync scenarios written once and run on both hosts: natively (`tests/sync_client.rs`, the
//! futures driven by `pollster`) and in the browser (`tests/web_sync.rs`, by
//! wasm-bindgen-test). The server is a script of answers behind the pass's `Transport` port
//! and time is a virtual clock, so no network and no waiting are involved, and the expected
//! outcome is known literally.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::objective::ObjectiveKind;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::delta::{self, Delta};
use tacit_rm::sync::pass::{self, PassOptions, PrivacyStatus};
use tacit_rm::sync::privacy::PrivacyReport;
use tacit_rm::sync::protocol::{self, UpdateAccepted};
use tacit_rm::sync::secagg::messages::{Phase, RoundParams, RoundView};
use tacit_rm::sync::secagg::session::{SecureOutcome, SessionOptions};
use tacit_rm::sync::{
    Clock, HttpRequest, HttpResponse, MemoryStore, PullOutcome, SyncClient, SyncConfig, SyncState,
    Transport,
};

/// A scripted server: each request takes the next answer; every request is recorded.
#[derive(Default)]
pub struct Script {
    pub answers: VecDeque<Result<HttpResponse, String>>,
    pub sent: Vec<HttpRequest>,
}

impl Transport for Script {
    async fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, String> {
        self.sent.push(request.clone());
        self.answers
            .pop_front()
            .unwrap_or_else(|| Err(format!("unscripted request {}", request.path)))
    }
}

/// Virtual time: sleeping moves it on at once.
#[derive(Clone, Default)]
pub struct VirtualClock(pub Rc<Cell<u64>>);

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }

    async fn sleep(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

pub fn head_config() -> HeadConfig {
    HeadConfig::new(4, &[3])
}

pub fn global(version: u64, seed: u64) -> Weights {
    let mut w = Weights::new(Head::init(&head_config(), seed).unwrap());
    w.version = version;
    w
}

/// `from` moved by a known, small perturbation.
pub fn trained(from: &Head, seed: u64) -> Head {
    let noise = Head::init(&head_config(), seed).unwrap().to_flat();
    let d: Vec<f32> = noise.iter().map(|v| v * 0.1).collect();
    delta::apply(from, &d).unwrap()
}

pub fn config() -> SyncConfig {
    let mut c = SyncConfig::new("m", "tok");
    c.clip_norm = 1e6;
    c.backoff_base_ms = 100;
    c.backoff_max_ms = 1000;
    c
}

pub fn accepted(id: u64) -> Result<HttpResponse, String> {
    Ok(HttpResponse {
        status: 202,
        etag: None,
        body: serde_json::to_vec(&UpdateAccepted {
            update_id: id,
            base_version: 1,
            n_examples: 1,
        })
        .unwrap(),
    })
}

pub fn refusal(status: u16, code: &str) -> Result<HttpResponse, String> {
    Ok(HttpResponse {
        status,
        etag: None,
        body: format!("{{\"code\":\"{code}\",\"message\":\"m\"}}").into_bytes(),
    })
}

/// The model's description (`GET …/meta`), which says how the server aggregates it.
pub fn meta(secure_aggregation: bool) -> Result<HttpResponse, String> {
    let meta = protocol::ModelMeta {
        name: "m".into(),
        version: 1,
        dim: 4,
        hidden: vec![3],
        activation: "relu".into(),
        outputs: 1,
        num_params: head_config().num_params(),
        pending_updates: 0,
        accepted_updates: 0,
        accepted_examples: 0,
        rounds: 0,
        secure_aggregation,
    };
    Ok(HttpResponse {
        status: 200,
        etag: None,
        body: serde_json::to_vec(&meta).unwrap(),
    })
}

/// A model the server aggregates in plain mode.
pub fn plain_mode() -> Result<HttpResponse, String> {
    meta(false)
}

/// `GET …/privacy` of a model without DP.
pub fn no_dp() -> Result<HttpResponse, String> {
    Ok(HttpResponse {
        status: 200,
        etag: None,
        body: br#"{"dp":false}"#.to_vec(),
    })
}

pub fn options(retry_budget_ms: u64) -> PassOptions {
    PassOptions {
        retry_budget_ms,
        fallback_objective: ips(),
        secure: SessionOptions {
            poll_ms: 100,
            give_up_ms: 1_000,
        },
    }
}

pub fn ips() -> ObjectiveKind {
    ObjectiveKind::parse("ips").unwrap()
}

/// Two pushes queued, A then B. A gets no answer, is retried after its backoff and accepted;
/// B is refused as stale. The server answered, so the pass must pull (which relabels B onto
/// the new global), even though B is still queued. (The native pass used to skip the pull
/// here because the failure of A's first attempt was never cleared; the browser's did not.)
pub async fn a_retry_accepted_then_the_pull_happens() {
    let g1 = global(1, 1);
    let clock = VirtualClock::default();
    let mut client = SyncClient::from_state(config(), SyncState::fresh(g1.clone())).unwrap();
    let a = trained(&g1.head, 2);
    client.commit_local(&a, 3, ips(), 0).unwrap();
    let b = trained(&a, 3);
    client.commit_local(&b, 2, ips(), 0).unwrap();
    let b_values = Delta::from_bytes(&client.queue()[1].body).unwrap().values;
    let mut store = MemoryStore {
        state: Some(client.state().clone()),
        weights: None,
    };

    let g2 = global(2, 7);
    let mut server = Script::default();
    server.answers.extend([
        plain_mode(),
        Err("connection refused".to_string()),
        accepted(1),
        refusal(409, "stale_base_version"),
        Ok(HttpResponse {
            status: 200,
            etag: Some(protocol::etag(2)),
            body: store::to_bytes(&g2).unwrap(),
        }),
    ]);
    server.answers.push_back(no_dp());
    let local = Weights::new(b.clone());
    let report = pass::sync(
        config(),
        &local,
        options(1_000),
        &mut server,
        &clock,
        &mut store,
    )
    .await
    .unwrap();

    let methods: Vec<&str> = server.sent.iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        ["GET", "POST", "POST", "POST", "GET", "GET"],
        "asked how the model is aggregated, pushed, pulled, asked its privacy"
    );
    assert_eq!(report.privacy, Some(PrivacyStatus::Off));
    assert!(!report.masked && report.secure_round.is_none());
    assert_eq!(clock.0.get(), 100, "A was retried after one backoff step");
    assert_eq!(report.pushed, 1);
    // What left: every body the transport was handed, the failed attempt's included.
    let handed: usize = server.sent.iter().map(|r| r.body.len()).sum();
    assert!(handed > 0);
    assert_eq!(report.sent_bytes, handed as u64);
    assert_eq!(report.pull, Some(PullOutcome::Updated { version: 2 }));
    assert_eq!(report.last_failure, None);
    assert_eq!((report.still_queued, report.version), (1, 2));
    // B waits for the next pass, relabelled onto version 2 with the same values.
    let stored = store.state.expect("state committed");
    assert_eq!(stored.queue.len(), 1);
    let relabelled = Delta::from_bytes(&stored.queue[0].body).unwrap();
    assert_eq!(relabelled.base_version, 2);
    assert_eq!(relabelled.values, b_values);
    assert!(!stored.queue[0].needs_rebase);
    assert_eq!(stored.reference.version, 2);
    // The local weights: the new global, committed with the state (everything trained was
    // queued, so nothing local is left over; B reaches the global through a later round).
    let rebased = report.rebased.expect("rebased weights");
    assert_eq!(store.weights.as_ref(), Some(&rebased));
    assert_eq!(rebased.version, 2);
    for (got, want) in rebased.head.to_flat().iter().zip(g2.head.to_flat()) {
        assert!((f64::from(*got) - f64::from(want)).abs() < 1e-6);
    }
}

/// A sync before the model exists on the server (404): the delta stays queued, the result
/// says why, and it is pushed once the model exists.
pub async fn a_push_to_a_missing_model_stays_queued() {
    let g1 = global(1, 1);
    let clock = VirtualClock::default();
    let mut state = SyncState::fresh(g1.clone());
    state.unsynced_examples = 4;
    let mut store = MemoryStore {
        state: Some(state),
        weights: None,
    };
    let local = Weights::new(trained(&g1.head, 2));
    let options = options(0);
    let mut server = Script::default();
    // The model does not exist yet: the server cannot say how it is aggregated.
    server.answers.push_back(refusal(404, "not_found"));
    let report = pass::sync(config(), &local, options, &mut server, &clock, &mut store)
        .await
        .unwrap();
    assert_eq!((report.pushed, report.still_queued), (0, 1));
    assert!(report.offline());
    let reason = report.last_failure.unwrap();
    assert!(reason.contains("404"), "{reason}");
    assert_eq!(
        server.sent.len(),
        1,
        "no push and no pull while the model is missing"
    );
    assert_eq!(server.sent[0].method, "GET");
    assert!(server.sent[0].body.is_empty());
    let queued = store.state.as_ref().unwrap().queue[0].clone();
    assert_eq!(queued.n_examples, 4);

    // The model exists now: the same push (same key) is accepted once its backoff is over.
    clock.0.set(queued.not_before_ms);
    let mut server = Script::default();
    server.answers.extend([
        plain_mode(),
        accepted(1),
        Ok(HttpResponse {
            status: 304,
            etag: Some(protocol::etag(1)),
            body: vec![],
        }),
        no_dp(),
    ]);
    let report = pass::sync(config(), &local, options, &mut server, &clock, &mut store)
        .await
        .unwrap();
    assert_eq!((report.pushed, report.still_queued), (1, 0));
    assert_eq!(report.pull, Some(PullOutcome::Unchanged));
    let key = server.sent[1]
        .headers
        .iter()
        .find(|(k, _)| k == protocol::IDEMPOTENCY_KEY)
        .map(|(_, v)| v.clone());
    assert_eq!(key, Some(queued.key));
}

/// A round of model `m` in `phase`, as the server shows it to a client that has not joined.
fn round_view(phase: Phase) -> Result<HttpResponse, String> {
    let view = RoundView {
        model: "m".into(),
        params: RoundParams {
            round: 7,
            base_version: 1,
            cohort: 3,
            threshold: 2,
            num_params: head_config().num_params() as u64,
            clip_norm: 1e6,
        },
        phase,
        you: None,
        members: vec![],
        shared: vec![],
        survivors: vec![],
        failure: None,
        released_version: None,
    };
    Ok(HttpResponse {
        status: 200,
        etag: None,
        body: serde_json::to_vec(&view).unwrap(),
    })
}

/// A model the server aggregates securely: the pass asks first, and no plain delta ever
/// leaves (a plain push, even one the server refuses, would hand it the unmasked delta).
/// Here the round is past joining: the update stays queued for the next round, the pull
/// still happens, and the report says so.
pub async fn a_secure_model_never_gets_a_plain_delta() {
    let g1 = global(1, 1);
    let clock = VirtualClock::default();
    let mut state = SyncState::fresh(g1.clone());
    state.unsynced_examples = 4;
    let mut store = MemoryStore {
        state: Some(state),
        weights: None,
    };
    let local = Weights::new(trained(&g1.head, 2));
    let mut server = Script::default();
    let dp = PrivacyReport {
        epsilon: 1.25,
        delta: 1e-5,
        rounds: 3,
        noise_multiplier: 1.1,
        sampling_rate: 0.01,
        budget_epsilon: 8.0,
    };
    let mut privacy = serde_json::to_value(dp).unwrap();
    privacy["dp"] = true.into();
    privacy["exhausted"] = false.into();
    server.answers.extend([
        meta(true),
        round_view(Phase::Share),
        Ok(HttpResponse {
            status: 304,
            etag: Some(protocol::etag(1)),
            body: vec![],
        }),
        Ok(HttpResponse {
            status: 200,
            etag: None,
            body: serde_json::to_vec(&privacy).unwrap(),
        }),
    ]);
    let report = pass::sync(
        config(),
        &local,
        options(0),
        &mut server,
        &clock,
        &mut store,
    )
    .await
    .unwrap();
    let calls: Vec<(&str, &str)> = server
        .sent
        .iter()
        .map(|r| (r.method, r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/v1/models/m/meta"),
            ("GET", "/v1/models/m/secagg"),
            ("GET", "/v1/models/m"),
            ("GET", "/v1/models/m/privacy"),
        ]
    );
    assert!(server.sent.iter().all(|r| r.body.is_empty()));
    assert_eq!(report.sent_bytes, 0);
    assert_eq!(report.secure_round, Some(SecureOutcome::Busy { round: 7 }));
    assert!(!report.masked && !report.offline());
    assert_eq!((report.pushed, report.still_queued), (0, 1));
    assert_eq!(report.privacy, Some(PrivacyStatus::On(dp)));
    assert_eq!(store.state.unwrap().queue[0].n_examples, 4);
}

/// No answer to "how is this model aggregated?": nothing is sent, the update stays queued,
/// the pass is offline (and makes no pull).
pub async fn no_answer_on_the_aggregation_mode_sends_nothing() {
    let g1 = global(1, 1);
    let clock = VirtualClock::default();
    let mut state = SyncState::fresh(g1.clone());
    state.unsynced_examples = 2;
    let mut store = MemoryStore {
        state: Some(state),
        weights: None,
    };
    let local = Weights::new(trained(&g1.head, 3));
    let mut server = Script::default();
    server.answers.push_back(Err("connection refused".into()));
    let report = pass::sync(
        config(),
        &local,
        options(0),
        &mut server,
        &clock,
        &mut store,
    )
    .await
    .unwrap();
    assert_eq!(server.sent.len(), 1);
    assert_eq!(report.last_failure.as_deref(), Some("connection refused"));
    assert_eq!(
        (report.pushed, report.still_queued, report.sent_bytes),
        (0, 1, 0)
    );
    assert_eq!(report.privacy, None);
}
