//! One client's part in a secure round, written once against the sync ports (a transport,
//! a clock, a store) like the plain pass: what it contributes is the sum of its queued pushes
//! (each a clipped increment of the same reference, so their sum is what it learned since its
//! last counted contribution), and the queue is the offline queue of plain mode.
//!
//! Counted once: before the masked input is sent, the round and the queued keys it holds are
//! stored with the sync state ([`InFlight`]). The pushes leave the queue only when that round
//! is `done` and its survivors name us; a failed round, or one whose sum lacks our input,
//! leaves them queued for a later round. A client that leaves mid-round (a reload, a closed
//! page, a lost network) is a dropout: the next call first asks the stored round's outcome,
//! and only then offers the queue again.

use serde::{Deserialize, Serialize};

use crate::sync::client::{error_body, HttpRequest, HttpResponse, SyncClient};
use crate::sync::delta::Delta;
use crate::sync::ports::{Clock, SyncStore, Transport};

use super::error::{SecAggError, SecAggResult};
use super::messages::*;
use super::participant::Participant;

/// A round that holds our masked input, until its outcome is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InFlight {
    pub round: u64,
    /// Our index in it.
    pub index: u32,
    /// The idempotency keys of the queued pushes its input sums.
    pub keys: Vec<String>,
}

/// How long to poll, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    pub poll_ms: u64,
    /// After this long in one call the client leaves the round (a dropout).
    pub give_up_ms: u64,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            poll_ms: 250,
            give_up_ms: 120_000,
        }
    }
}

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureOutcome {
    /// Nothing queued, nothing in flight.
    Nothing,
    /// The round's released sum holds our queued pushes; they left the queue.
    Counted {
        round: u64,
        pushes: usize,
        version: Option<u64>,
    },
    /// The round ended without our input in a sum: the pushes stay queued for a later round.
    NotCounted { round: u64, reason: String },
    /// A round is under way that we cannot take part in (it is past joining, or holds an
    /// input of ours whose outcome is not known yet): call again later.
    Busy { round: u64 },
    /// We left the round before its end (the time ran out); the next call learns its outcome.
    Left { round: u64 },
}

/// One request; a 200 is parsed as `T`, anything else is a typed error.
async fn call<T: serde::de::DeserializeOwned>(
    transport: &mut impl Transport,
    request: HttpRequest,
) -> SecAggResult<T> {
    let response: HttpResponse = transport
        .send(&request)
        .await
        .map_err(SecAggError::Network)?;
    if response.status != 200 {
        let body = error_body(&response);
        return Err(SecAggError::Rejected {
            status: response.status,
            code: body.code,
            message: body.message,
        });
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| SecAggError::Malformed(format!("an unreadable answer: {e}")))
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain fields serialise")
}

async fn commit(client: &SyncClient, store: &mut impl SyncStore) -> SecAggResult<()> {
    store
        .commit(client.state(), None)
        .await
        .map_err(|e| SecAggError::Storage(e.to_string()))
}

/// Settles a finished round: drops the pushes it counted, forgets the marker.
async fn settle(
    client: &mut SyncClient,
    store: &mut impl SyncStore,
    flight: &InFlight,
    view: &RoundView,
) -> SecAggResult<SecureOutcome> {
    let outcome = if view.phase == Phase::Done && view.survivors.contains(&flight.index) {
        let queue = &mut client.state_mut().queue;
        let before = queue.len();
        queue.retain(|p| !flight.keys.contains(&p.key));
        SecureOutcome::Counted {
            round: flight.round,
            pushes: before - queue.len(),
            version: view.released_version,
        }
    } else {
        SecureOutcome::NotCounted {
            round: flight.round,
            reason: view
                .failure
                .clone()
                .unwrap_or_else(|| "our input is not in the round's sum".into()),
        }
    };
    client.state_mut().secure_round = None;
    commit(client, store).await?;
    Ok(outcome)
}

/// Takes part in the model's current round with the queued pushes (see the module
/// documentation). Errors are typed; none loses or double-counts a queued push.
pub async fn take_part(
    client: &mut SyncClient,
    options: SessionOptions,
    transport: &mut impl Transport,
    clock: &impl Clock,
    store: &mut impl SyncStore,
) -> SecAggResult<SecureOutcome> {
    let model = client.config().model.clone();
    if let Some(flight) = client.state().secure_round.clone() {
        let view: RoundView = call(
            transport,
            client.request("GET", round_path(&model, flight.round), vec![]),
        )
        .await?;
        if !matches!(view.phase, Phase::Done | Phase::Failed) {
            return Ok(SecureOutcome::Busy {
                round: flight.round,
            });
        }
        // One round per call: what is still queued is offered by the next call.
        return settle(client, store, &flight, &view).await;
    }
    if client.queue().is_empty() {
        return Ok(SecureOutcome::Nothing);
    }
    let mut contribution = vec![0f32; 0];
    let mut keys = Vec::new();
    for push in client.queue() {
        let delta =
            Delta::from_bytes(&push.body).map_err(|e| SecAggError::Storage(e.to_string()))?;
        if contribution.is_empty() {
            contribution = vec![0.0; delta.values.len()];
        }
        if delta.values.len() != contribution.len() {
            return Err(SecAggError::Storage(
                "queued deltas of different sizes".into(),
            ));
        }
        contribution
            .iter_mut()
            .zip(&delta.values)
            .for_each(|(c, v)| *c += v);
        keys.push(push.key.clone());
    }
    let current: RoundView = call(
        transport,
        client.request("GET", current_path(&model), vec![]),
    )
    .await?;
    let round = current.params.round;
    if current.phase != Phase::Advertise || current.you.is_some() {
        return Ok(SecureOutcome::Busy { round });
    }
    let mut part = Participant::new(&model, current.params.clone())?;
    let mut view: RoundView = call(
        transport,
        client.request(
            "POST",
            step_path(&model, round, "advertise"),
            json(&part.advertise()),
        ),
    )
    .await?;
    let deadline = clock.now_ms().saturating_add(options.give_up_ms);
    let (mut shared, mut sent_input, mut unmasked) = (false, false, false);
    loop {
        let step: Option<(&str, Vec<u8>)> = match view.phase {
            Phase::Share if !shared => Some(("shares", json(&part.share(&view)?))),
            Phase::Input if !sent_input && shared => {
                let for_you: SharesForYou = call(
                    transport,
                    client.request("GET", step_path(&model, round, "shares"), vec![]),
                )
                .await?;
                let input = part.mask(&view, &for_you, &contribution)?;
                // From here our pushes may be in a released sum: stored before sending, so
                // that a crash between the two cannot offer them twice.
                let index = view.you.ok_or(SecAggError::NotInCohort(round))?;
                client.state_mut().secure_round = Some(InFlight {
                    round,
                    index,
                    keys: keys.clone(),
                });
                commit(client, store).await?;
                Some(("input", json(&input)))
            }
            Phase::Unmask if sent_input && !unmasked => {
                Some(("unmask", json(&part.unmask(&view)?)))
            }
            Phase::Done | Phase::Failed => {
                let flight = client.state().secure_round.clone().unwrap_or(InFlight {
                    round,
                    index: u32::MAX,
                    keys: Vec::new(),
                });
                return settle(client, store, &flight, &view).await;
            }
            // A phase we have nothing for (we dropped out of it, or it has not moved).
            _ => None,
        };
        // A step is marked sent once the server answered it; until then a retry resends the
        // same message (the participant answers a repeated view with the same bytes).
        let next = match step {
            Some((name, body)) => {
                let answer = call(
                    transport,
                    client.request("POST", step_path(&model, round, name), body),
                )
                .await;
                if answer.is_ok() {
                    match name {
                        "shares" => shared = true,
                        "input" => sent_input = true,
                        _ => unmasked = true,
                    }
                }
                answer
            }
            None => {
                if clock.now_ms() >= deadline {
                    return Ok(SecureOutcome::Left { round });
                }
                clock.sleep(options.poll_ms).await;
                call(
                    transport,
                    client.request("GET", round_path(&model, round), vec![]),
                )
                .await
            }
        };
        view = match next {
            Ok(v) => v,
            // Offline for a moment: a dropout only if it lasts past the deadline.
            Err(SecAggError::Network(_)) if clock.now_ms() < deadline => {
                clock.sleep(options.poll_ms).await;
                continue;
            }
            Err(SecAggError::Network(_)) => return Ok(SecureOutcome::Left { round }),
            Err(e) => return Err(e),
        };
    }
}
