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
use tacit_rm::sync::pass::{self, PassOptions};
use tacit_rm::sync::protocol::{self, UpdateAccepted};
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
        Err("connection refused".to_string()),
        accepted(1),
        refusal(409, "stale_base_version"),
        Ok(HttpResponse {
            status: 200,
            etag: Some(protocol::etag(2)),
            body: store::to_bytes(&g2).unwrap(),
        }),
    ]);
    let local = Weights::new(b.clone());
    let options = PassOptions {
        retry_budget_ms: 1_000,
        fallback_objective: ips(),
    };
    let report = pass::sync(config(), &local, options, &mut server, &clock, &mut store)
        .await
        .unwrap();

    let methods: Vec<&str> = server.sent.iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        ["POST", "POST", "POST", "GET"],
        "the pull was made"
    );
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
    let options = PassOptions {
        retry_budget_ms: 0,
        fallback_objective: ips(),
    };
    let mut server = Script::default();
    server.answers.push_back(refusal(404, "not_found"));
    let report = pass::sync(config(), &local, options, &mut server, &clock, &mut store)
        .await
        .unwrap();
    assert_eq!((report.pushed, report.still_queued), (0, 1));
    assert!(report.offline());
    let reason = report.last_failure.unwrap();
    assert!(reason.contains("404"), "{reason}");
    assert_eq!(server.sent.len(), 1, "no pull while the push waits");
    let queued = store.state.as_ref().unwrap().queue[0].clone();
    assert_eq!(queued.n_examples, 4);

    // The model exists now: the same push (same key) is accepted once its backoff is over.
    clock.0.set(queued.not_before_ms);
    let mut server = Script::default();
    server.answers.extend([
        accepted(1),
        Ok(HttpResponse {
            status: 304,
            etag: Some(protocol::etag(1)),
            body: vec![],
        }),
    ]);
    let report = pass::sync(config(), &local, options, &mut server, &clock, &mut store)
        .await
        .unwrap();
    assert_eq!((report.pushed, report.still_queued), (1, 0));
    assert_eq!(report.pull, Some(PullOutcome::Unchanged));
    let key = server.sent[0]
        .headers
        .iter()
        .find(|(k, _)| k == protocol::IDEMPOTENCY_KEY)
        .map(|(_, v)| v.clone());
    assert_eq!(key, Some(queued.key));
}
