//! One sync pass, written once for every host (`tacit sync` natively, `rm.sync()` in the
//! browser) against the ports of [`super::ports`]:
//!
//! 1. queue what local training changed since the last pass (one clipped delta, weighted by
//!    the examples trained on) and store the queue before any network traffic;
//! 2. push what is due, oldest first, retrying transient failures with the client's backoff
//!    while the retry budget lasts, and store the queue after every answer;
//! 3. pull the global if it is newer, rebase the local weights onto it, and store weights and
//!    state together.
//!
//! The pull is skipped only when the server is unreachable *now*: when the last push attempt
//! got no usable answer and that push is still queued. A push that failed and then was
//! accepted on a retry shows the server is reachable, so the pull happens, even with other
//! pushes still queued (they may be waiting for exactly that pull: a push refused as stale is
//! relabelled onto the pulled global).

use crate::error::{Error, Result};
use crate::objective::ObjectiveKind;
use crate::store::Weights;

use super::client::{PullOutcome, PushOutcome, SyncClient, SyncConfig};
use super::ports::{Clock, SyncStore, Transport};

/// How one pass behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassOptions {
    /// How long the pass may wait to retry a failed push before leaving it queued.
    pub retry_budget_ms: u64,
    /// The objective a delta is labelled with when the local weights name none.
    pub fallback_objective: ObjectiveKind,
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
    /// Bytes of request bodies handed to the transport in this pass: the pushed deltas (a
    /// pull sends none). A request that failed counts, since its bytes may have left.
    pub sent_bytes: u64,
    /// The local weights rebased onto a newer global, already committed to the store; the
    /// host installs them. `None` when nothing was pulled.
    pub rebased: Option<Weights>,
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

    let deadline = clock.now_ms().saturating_add(options.retry_budget_ms);
    let mut pushed = 0;
    let mut sent_bytes: u64 = 0;
    // The failure that keeps the oldest push waiting, if the last answer was one.
    let mut failure = None;
    loop {
        let now = clock.now_ms();
        if let Some(request) = client.due_push(now) {
            sent_bytes = sent_bytes.saturating_add(request.body.len() as u64);
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

    let mut report = SyncReport {
        pushed,
        still_queued: client.queue().len(),
        last_failure: None,
        pull: None,
        version: client.base_version(),
        rebased: None,
        sent_bytes,
    };
    if failure.is_some() && !client.queue().is_empty() {
        // Still unreachable: do not also wait for a pull that would fail the same way.
        report.last_failure = failure;
        return Ok(report);
    }
    let mut head = local.head.clone();
    let pull_request = client.pull_request();
    report.sent_bytes = report
        .sent_bytes
        .saturating_add(pull_request.body.len() as u64);
    let answer = transport.send(&pull_request).await;
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
    Ok(report)
}
