//! One sync pass, written once for every host (`tacit sync` natively, `rm.sync()` in the
//! browser) against the ports of [`super::ports`]:
//!
//! 1. queue what local training changed since the last pass (one clipped delta, weighted by
//!    the examples trained on) and store the queue before any network traffic;
//! 2. learn how the model is aggregated, before any delta leaves the device: with something
//!    queued, the pass reads the model's description (`GET …/meta`, its `secure_aggregation`);
//!    only a readable answer that says plain lets a plain delta go, since a plain push to a
//!    model aggregated securely would hand the server an unmasked delta even if it then
//!    refused it;
//! 3. in plain mode, push what is due, oldest first, retrying transient failures with the
//!    client's backoff while the retry budget lasts, and store the queue after every answer;
//!    in secure mode, take the queue into the model's round ([`session::take_part`]: masked,
//!    counted once, a dropout if the page leaves);
//! 4. pull the global if it is newer, rebase the local weights onto it, and store weights and
//!    state together; then ask what privacy the model has spent (`GET …/privacy`).
//!
//! The pull is skipped only when the server is unreachable *now*: when the last push attempt
//! got no usable answer and that push is still queued. A push that failed and then was
//! accepted on a retry shows the server is reachable, so the pull happens, even with other
//! pushes still queued (they may be waiting for exactly that pull: a push refused as stale is
//! relabelled onto the pulled global).

use crate::error::{Error, Result};
use crate::objective::ObjectiveKind;
use crate::store::Weights;

use super::client::{
    error_body, HttpRequest, HttpResponse, PullOutcome, PushOutcome, SyncClient, SyncConfig,
};
use super::ports::{Clock, SyncStore, Transport};
use super::privacy::PrivacyReport;
use super::protocol::{self, ModelMeta};
use super::secagg::session::{self, SecureOutcome, SessionOptions};
use super::secagg::SecAggError;

/// How one pass behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassOptions {
    /// How long the pass may wait to retry a failed push before leaving it queued.
    pub retry_budget_ms: u64,
    /// The objective a delta is labelled with when the local weights name none.
    pub fallback_objective: ObjectiveKind,
    /// How long to wait for a secure round (on a model the server aggregates securely), and
    /// how often to ask it.
    pub secure: SessionOptions,
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncReport {
    /// Updates the server accepted during this pass.
    pub pushed: usize,
    /// Updates still queued (offline, waiting to retry, or waiting for a pull to rebase).
    pub still_queued: usize,
    /// Why the server counts as unreachable now (the pull was skipped or failed); `None` when
    /// it answered.
    pub last_failure: Option<String>,
    /// `None` when the pull was not made or got no answer.
    pub pull: Option<PullOutcome>,
    /// The global version the local weights build on after the pass.
    pub version: u64,
    /// Bytes of request bodies handed to the transport in this pass: the pushed deltas, or a
    /// secure round's messages (a pull sends none). A request that failed counts, since its
    /// bytes may have left.
    pub sent_bytes: u64,
    /// This pass sent the model update masked (a secure round's input); `false` when it
    /// pushed plain deltas or sent no update.
    pub masked: bool,
    /// The secure round this pass took part in, or learned the outcome of; `None` on a model
    /// aggregated in plain mode, or when nothing was queued.
    pub secure_round: Option<SecureOutcome>,
    /// What the server says the model has spent under differential privacy, asked after the
    /// pull; `None` when it was not asked (the server was unreachable) or did not answer.
    pub privacy: Option<PrivacyStatus>,
    /// The local weights rebased onto a newer global, already committed to the store; the
    /// host installs them. `None` when nothing was pulled.
    pub rebased: Option<Weights>,
}

/// A model's privacy as `GET …/privacy` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PrivacyStatus {
    /// The server adds no DP noise to this model's releases: no ε is spent, and none bounds
    /// what a release says about one client.
    Off,
    /// The (ε, δ) spent by the releases so far, by the server's RDP accountant.
    On(PrivacyReport),
}

impl SyncReport {
    /// The server could not be reached; what was queued stays queued for the next pass.
    pub fn offline(&self) -> bool {
        self.last_failure.is_some()
    }
}

/// One pass over the stored state: loads it from `store`, runs [`run`], and leaves it
/// committed. A store with no state yet is an error: the host makes the first state (the
/// browser from its fresh weights, `tacit sync` from the first global it fetches).
pub async fn sync(
    config: SyncConfig,
    local: &Weights,
    options: PassOptions,
    transport: &mut impl Transport,
    clock: &impl Clock,
    store: &mut impl SyncStore,
) -> Result<SyncReport> {
    let state = store
        .load()
        .await?
        .ok_or_else(|| Error::InvalidConfig("no sync state is stored for this model yet".into()))?;
    let mut client = SyncClient::from_state(config, state)?;
    run(&mut client, local, options, transport, clock, store).await
}

/// One pass over a client (see the module documentation); every change to the client's
/// state is committed to `store` before the next request is sent.
pub async fn run(
    client: &mut SyncClient,
    local: &Weights,
    options: PassOptions,
    transport: &mut impl Transport,
    clock: &impl Clock,
    store: &mut impl SyncStore,
) -> Result<SyncReport> {
    let unsynced = client.state().unsynced_examples;
    if unsynced > 0 {
        let objective = local.objective.unwrap_or(options.fallback_objective);
        client.commit_local(&local.head, unsynced, objective, clock.now_ms())?;
        client.state_mut().unsynced_examples = 0;
        store.commit(client.state(), None).await?;
    }

    let mut transport = Counting::new(transport);
    let mut report = SyncReport {
        pushed: 0,
        still_queued: 0,
        last_failure: None,
        pull: None,
        version: client.base_version(),
        rebased: None,
        sent_bytes: 0,
        masked: false,
        secure_round: None,
        privacy: None,
    };
    // The failure that keeps the oldest update waiting, if the last answer was one.
    let failure = match aggregation(client, &mut transport).await? {
        Aggregation::Plain => {
            let (pushed, failure) =
                push_plain(client, options, &mut transport, clock, store).await?;
            report.pushed = pushed;
            failure
        }
        Aggregation::Secure => {
            let outcome = session::take_part(client, options.secure, &mut transport, clock, store)
                .await
                .map_err(into_sync_error);
            report.masked = transport.masked_input;
            match outcome {
                Ok(outcome) => {
                    if let SecureOutcome::Counted { pushes, .. } = outcome {
                        report.pushed = pushes;
                    }
                    report.secure_round = Some(outcome).filter(|o| *o != SecureOutcome::Nothing);
                    None
                }
                Err(Error::Network(reason)) => Some(reason),
                Err(e) => return Err(e),
            }
        }
        Aggregation::Unknown(reason) => Some(reason),
    };
    report.sent_bytes = transport.bytes;
    report.still_queued = client.queue().len();
    if failure.is_some() && !client.queue().is_empty() {
        // Still unreachable: do not also wait for a pull that would fail the same way.
        report.last_failure = failure;
        return Ok(report);
    }
    let mut head = local.head.clone();
    let answer = transport.send(&client.pull_request()).await;
    report.sent_bytes = transport.bytes;
    let pull = match client.on_pull_response(answer, &mut head) {
        Err(Error::Network(reason)) => {
            report.last_failure = Some(reason);
            return Ok(report);
        }
        other => other?,
    };
    if let PullOutcome::Updated { version } = pull {
        let rebased = Weights {
            head,
            version,
            ..local.clone()
        };
        store.commit(client.state(), Some(&rebased)).await?;
        report.rebased = Some(rebased);
    }
    report.pull = Some(pull);
    report.still_queued = client.queue().len();
    report.version = client.base_version();
    report.privacy = privacy(client, &mut transport).await;
    report.sent_bytes = transport.bytes;
    Ok(report)
}

/// How the server aggregates the model, as far as this pass needs to know.
enum Aggregation {
    Plain,
    Secure,
    /// The server did not say (unreachable, the model not there yet, a refusal it may
    /// outlive): nothing is sent, the queue waits.
    Unknown(String),
}

/// Asks the server how it aggregates the model (its `/meta`) when there is anything to send.
/// A round of ours in flight means secure; an empty queue needs no answer.
async fn aggregation(client: &SyncClient, transport: &mut impl Transport) -> Result<Aggregation> {
    if client.state().secure_round.is_some() {
        return Ok(Aggregation::Secure);
    }
    if client.queue().is_empty() {
        return Ok(Aggregation::Plain);
    }
    let request = client.request("GET", protocol::meta_path(&client.config().model), vec![]);
    let response = match transport.send(&request).await {
        Ok(r) => r,
        Err(reason) => return Ok(Aggregation::Unknown(reason)),
    };
    if response.status == 200 {
        return Ok(match serde_json::from_slice::<ModelMeta>(&response.body) {
            Ok(meta) if meta.secure_aggregation => Aggregation::Secure,
            Ok(_) => Aggregation::Plain,
            Err(e) => Aggregation::Unknown(format!("an unreadable model description: {e}")),
        });
    }
    let body = error_body(&response);
    match response.status {
        401 | 403 => Err(Error::SyncUnauthorized(body.message)),
        status => Ok(Aggregation::Unknown(format!(
            "server answered {status} ({}) when asked how it aggregates the model",
            body.code
        ))),
    }
}

/// Plain mode: pushes what is due, oldest first, retrying within the budget. Returns the
/// pushes accepted and the failure that keeps the oldest one waiting, if any.
async fn push_plain(
    client: &mut SyncClient,
    options: PassOptions,
    transport: &mut impl Transport,
    clock: &impl Clock,
    store: &mut impl SyncStore,
) -> Result<(usize, Option<String>)> {
    let deadline = clock.now_ms().saturating_add(options.retry_budget_ms);
    let mut pushed = 0;
    let mut failure = None;
    loop {
        let now = clock.now_ms();
        if let Some(request) = client.due_push(now) {
            let answer = transport.send(&request).await;
            let outcome = client.on_push_response(answer, clock.now_ms());
            // Whatever happened to the queue (accepted, rescheduled, dropped) is stored
            // before the next step, so that a restart resumes from here.
            store.commit(client.state(), None).await?;
            match outcome? {
                PushOutcome::Accepted(_) => {
                    pushed += 1;
                    failure = None;
                }
                PushOutcome::Retry { reason, .. } => failure = Some(reason),
                // The server answered: pull first, which relabels this push for the next pass.
                PushOutcome::NeedsRebase => {
                    failure = None;
                    break;
                }
            }
            continue;
        }
        match client.next_due_ms() {
            Some(due) if due <= deadline => clock.sleep(due.saturating_sub(now)).await,
            _ => break,
        }
    }
    Ok((pushed, failure))
}

/// The model's privacy spent so far; `None` when the server did not give a readable answer
/// (which is not worth failing a pass that has already synced).
async fn privacy(client: &SyncClient, transport: &mut impl Transport) -> Option<PrivacyStatus> {
    let request = client.request(
        "GET",
        protocol::privacy_path(&client.config().model),
        vec![],
    );
    let response = transport.send(&request).await.ok()?;
    if response.status != 200 {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Dp {
        dp: bool,
    }
    let Dp { dp } = serde_json::from_slice(&response.body).ok()?;
    if !dp {
        return Some(PrivacyStatus::Off);
    }
    serde_json::from_slice(&response.body)
        .ok()
        .map(PrivacyStatus::On)
}

/// A secure round's error as a sync error: offline is offline, storage is storage, a refused
/// token is unauthorised, and everything else (a round message the server or the client got
/// wrong) is a refusal carrying the round's own stable code. None of them loses a queued
/// update: `take_part` keeps the queue whenever it fails.
fn into_sync_error(e: SecAggError) -> Error {
    match e {
        SecAggError::Network(reason) => Error::Network(reason),
        SecAggError::Storage(m) => Error::Storage(m),
        SecAggError::Rejected {
            status: 401 | 403,
            message,
            ..
        } => Error::SyncUnauthorized(message),
        SecAggError::Rejected {
            status,
            code,
            message,
        } => Error::SyncRejected {
            status,
            code,
            message,
        },
        other => Error::SyncRejected {
            status: other.status(),
            code: other.code().into(),
            message: other.to_string(),
        },
    }
}

/// The transport of one pass, counting what it hands on: the bytes of every request body
/// (a failed request's too: they may have left) and whether a masked input went.
struct Counting<'a, T> {
    inner: &'a mut T,
    bytes: u64,
    masked_input: bool,
}

impl<'a, T: Transport> Counting<'a, T> {
    fn new(inner: &'a mut T) -> Self {
        Counting {
            inner,
            bytes: 0,
            masked_input: false,
        }
    }
}

impl<T: Transport> Transport for Counting<'_, T> {
    async fn send(&mut self, request: &HttpRequest) -> std::result::Result<HttpResponse, String> {
        self.bytes = self.bytes.saturating_add(request.body.len() as u64);
        if request.method == "POST" && request.path.ends_with("/input") {
            self.masked_input = true;
        }
        self.inner.send(request).await
    }
}
