//! Secure aggregation end to end (issue 14): native clients (the library's sans-IO
//! `Participant`) against the real server on loopback, on SQLite and Postgres. A cohort of 10
//! lands on the plain mean within the quantisation bound stated in advance; no stored row
//! holds an unmasked delta; 3 dropouts after their input still complete the round; below the
//! threshold the round fails and releases nothing, and the updates join the next round once;
//! malformed, replayed and wrong-round messages are typed errors.

mod common;

use common::*;
use serde::de::DeserializeOwned;
use tacit_rm::sync::secagg::messages::*;
use tacit_rm::sync::secagg::{Participant, Quantizer};
use tacit_rm::Head;

const MODEL: &str = "m";
const CLIP: f64 = 1.0;

fn get<T: DeserializeOwned>(server: &Server, token: &str, path: &str) -> T {
    let r = request(
        server,
        "GET",
        path,
        &[("Authorization", &bearer(token))],
        vec![],
    );
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).expect("JSON")
}

fn post(server: &Server, token: &str, path: &str, body: &impl serde::Serialize) -> HttpResponseOf {
    let r = request(
        server,
        "POST",
        path,
        &[
            ("Authorization", &bearer(token)),
            ("Content-Type", "application/json"),
        ],
        serde_json::to_vec(body).unwrap(),
    );
    HttpResponseOf(r)
}

/// A POST's answer, with the view read when it is 200.
struct HttpResponseOf(tacit_rm::sync::client::HttpResponse);

impl HttpResponseOf {
    fn view(self) -> RoundView {
        assert_eq!(
            self.0.status,
            200,
            "{}",
            String::from_utf8_lossy(&self.0.body)
        );
        serde_json::from_slice(&self.0.body).expect("a round view")
    }
}

/// How far a member goes in a round.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Stop {
    /// Joins and leaves before sharing.
    AfterJoin,
    /// Shares, then leaves before its input.
    AfterShare,
    /// Sends its masked input, then leaves before unmasking.
    AfterInput,
    /// Takes part to the end.
    Never,
}

struct Client {
    token: String,
    part: Option<Participant>,
    delta: Vec<f32>,
}

fn clients(db: &str, n: usize, len: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            // One member's delta is far over the clip norm: the clip is part of what both
            // modes must agree on.
            let scale = if i == 3 { 2.0 } else { 0.05 };
            Client {
                token: token(db, &format!("client{i}"), false),
                part: None,
                delta: values(len, 100 + i as u64, scale),
            }
        })
        .collect()
}

fn view(server: &Server, c: &Client, round: u64) -> RoundView {
    get(server, &c.token, &round_path(MODEL, round))
}

/// Polls round `round` until `done` returns true (the server's phase deadlines move it).
fn wait_for(
    server: &Server,
    token: &str,
    round: u64,
    done: impl Fn(&RoundView) -> bool,
) -> RoundView {
    let start = std::time::Instant::now();
    loop {
        let v: RoundView = get(server, token, &round_path(MODEL, round));
        if done(&v) {
            return v;
        }
        assert!(start.elapsed().as_secs() < 60, "round stuck at {v:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// One round with every client, each stopping as `stops` says; returns the final view and
/// the round id. `between` runs once the masked inputs are in (before unmasking).
fn run_round(
    server: &Server,
    cs: &mut [Client],
    stops: &[Stop],
    between: impl FnOnce(&[Client]),
) -> (RoundView, u64) {
    let first: RoundView = get(server, &cs[0].token, &current_path(MODEL));
    let round = first.params.round;
    assert_eq!(first.phase, Phase::Advertise);
    for c in cs.iter_mut() {
        let v: RoundView = get(server, &c.token, &current_path(MODEL));
        assert_eq!(v.params.round, round);
        let part = Participant::new(MODEL, v.params.clone()).unwrap();
        post(
            server,
            &c.token,
            &step_path(MODEL, round, "advertise"),
            &part.advertise(),
        )
        .view();
        c.part = Some(part);
    }
    let share_phase = |v: &RoundView| v.phase >= Phase::Share;
    wait_for(server, &cs[0].token, round, share_phase);
    for (c, stop) in cs.iter_mut().zip(stops) {
        if *stop == Stop::AfterJoin {
            continue;
        }
        let v = view(server, c, round);
        let upload = c.part.as_mut().unwrap().share(&v).unwrap();
        post(
            server,
            &c.token,
            &step_path(MODEL, round, "shares"),
            &upload,
        )
        .view();
    }
    let v = wait_for(server, &cs[0].token, round, |v| v.phase >= Phase::Input);
    if v.phase == Phase::Failed {
        return (v, round);
    }
    for (c, stop) in cs.iter_mut().zip(stops) {
        if *stop < Stop::AfterInput {
            continue;
        }
        let v = view(server, c, round);
        let for_you: SharesForYou = get(server, &c.token, &step_path(MODEL, round, "shares"));
        let input = c
            .part
            .as_mut()
            .unwrap()
            .mask(&v, &for_you, &c.delta)
            .unwrap();
        post(server, &c.token, &step_path(MODEL, round, "input"), &input).view();
    }
    let survivor = cs
        .iter()
        .zip(stops)
        .find(|(_, s)| **s >= Stop::AfterInput)
        .map(|(c, _)| c.token.clone())
        .unwrap();
    let v = wait_for(server, &survivor, round, |v| v.phase >= Phase::Unmask);
    if v.phase == Phase::Failed {
        return (v, round);
    }
    between(cs);
    for (c, stop) in cs.iter_mut().zip(stops) {
        if *stop != Stop::Never {
            continue;
        }
        let v = view(server, c, round);
        let response = c.part.as_mut().unwrap().unmask(&v).unwrap();
        post(
            server,
            &c.token,
            &step_path(MODEL, round, "unmask"),
            &response,
        )
        .view();
    }
    let v = wait_for(server, &survivor, round, |v| v.phase >= Phase::Done);
    (v, round)
}

/// A server with `MODEL` under secure aggregation. `phase_seconds` is how long a phase waits
/// for dropouts: short where the test drops members, long where a slow check runs mid-round.
fn secagg_server(db: &str, cohort: &str, phase_seconds: &str) -> Server {
    Server::start(
        db,
        &[
            "--secure-aggregation",
            MODEL,
            "--round-updates",
            cohort,
            "--secagg-phase-seconds",
            phase_seconds,
            "--clip-norm",
            "1",
        ],
    )
}

/// Each client's delta after the client's own clip (what either mode sends, masked or not).
fn clipped(c: &Client) -> Vec<f32> {
    let mut d = c.delta.clone();
    tacit_rm::sync::delta::clip(&mut d, CLIP).unwrap();
    d
}

/// base + mean of the clipped deltas of `members`, in f64: the independent reference.
fn reference(base: &Head, cs: &[Client], members: &[usize]) -> Vec<f64> {
    let mut mean = vec![0.0f64; base.num_params()];
    for &i in members {
        for (m, v) in mean.iter_mut().zip(clipped(&cs[i])) {
            *m += f64::from(v) / members.len() as f64;
        }
    }
    base.to_flat()
        .iter()
        .zip(mean)
        .map(|(b, m)| f64::from(*b) + m)
        .collect()
}

/// Per coordinate: the quantisation bound stated in advance plus the f32 rounding of the
/// step and of the sum with the global (one ulp each at the magnitude involved).
fn assert_within(got: &Head, want: &[f64], q: &Quantizer) {
    for (i, (g, w)) in got.to_flat().iter().zip(want).enumerate() {
        let ulps = 2.0 * f64::from(f32::EPSILON) * (w.abs() + 1.0);
        let bound = q.max_mean_error() + ulps;
        assert!(
            (f64::from(*g) - w).abs() <= bound,
            "coordinate {i}: {g} vs {w} (bound {bound:e})"
        );
    }
}

fn setup(backend: Backend, test: &str) -> Option<(Database, String, Head)> {
    let db = database(backend, test)?;
    let admin = token(&db.url, "admin", true);
    let base = Head::init(&small_config(), 5).unwrap();
    Some((db, admin, base))
}

/// Every stored byte that could hold a delta — weights, plain deltas, masked inputs, unmask
/// answers, relayed shares, and every text column — holds no client's delta: neither its f32
/// bytes nor its quantised words, in binary or hex, not even 8 bytes of them.
fn assert_no_unmasked_delta(url: &str, cs: &[Client], q: &Quantizer) {
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for sql in [
        "SELECT weights FROM models",
        "SELECT delta FROM updates",
        "SELECT masked_input FROM secagg_members",
    ] {
        stored.extend(query_bytes(url, sql));
    }
    for sql in [
        "SELECT unmask FROM secagg_members",
        "SELECT ciphertext FROM secagg_shares",
        "SELECT cipher_pk FROM secagg_members",
        "SELECT mask_pk FROM secagg_members",
        "SELECT seed_commitment FROM secagg_members",
        "SELECT params FROM secagg_rounds",
        "SELECT failure FROM secagg_rounds",
    ] {
        stored.extend(query_strings(url, sql).into_iter().map(String::into_bytes));
    }
    assert_eq!(
        query_i64(url, "SELECT CAST(COUNT(*) AS BIGINT) FROM updates"),
        0
    );
    for c in cs {
        let d = clipped(c);
        let f32_bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
        let q_bytes: Vec<u8> = q
            .encode(&d)
            .unwrap()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        for pattern in [f32_bytes, q_bytes] {
            let hex = tacit_rm::sync::secagg::crypto::to_hex(&pattern).into_bytes();
            for (p, w) in [(&pattern, 8), (&hex, 16)] {
                for window in p.windows(w) {
                    // Windows of zeros would match anything sparse: skip them.
                    if window.iter().all(|&b| b == 0 || b == b'0') {
                        continue;
                    }
                    for s in &stored {
                        assert!(
                            !s.windows(w).any(|x| x == window),
                            "a stored value holds 8 bytes of a client's delta"
                        );
                    }
                }
            }
        }
    }
}

/// (a) 10 clients under secure aggregation reach the plain mean (a plain-mode server given
/// the same clipped deltas, and base + mean in f64) within the stated bound; (b) while the
/// masked inputs are stored, and after, no stored row holds an unmasked delta.
fn ten_clients_aggregate_to_the_plain_mean(backend: Backend) {
    let Some((db, admin, base)) = setup(backend, "secagg_ten") else {
        return;
    };
    let server = secagg_server(&db.url, "10", "60");
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let len = base.num_params();
    let mut cs = clients(&db.url, 10, len);
    let q = Quantizer::new(CLIP, 10).unwrap();
    let url = db.url.clone();
    let (v, _) = run_round(&server, &mut cs, &[Stop::Never; 10], |cs| {
        assert_eq!(
            query_i64(&url, "SELECT CAST(COUNT(*) AS BIGINT) FROM secagg_members WHERE masked_input IS NOT NULL"),
            10
        );
        assert_no_unmasked_delta(&url, cs, &q);
    });
    assert_eq!(v.phase, Phase::Done, "{v:?}");
    assert_eq!(v.survivors, (0..10).collect::<Vec<u32>>());
    assert_eq!(v.released_version, Some(2));
    let global = pull(&server, &admin, MODEL);
    assert_eq!(global.version, 2);
    assert_within(
        &global.head,
        &reference(&base, &cs, &(0..10).collect::<Vec<_>>()),
        &q,
    );
    assert_no_unmasked_delta(&db.url, &cs, &q);
    // The round's secrets are gone: shares deleted, masked inputs and answers emptied.
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM secagg_shares"
        ),
        0
    );
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM secagg_members \
             WHERE masked_input IS NOT NULL OR unmask IS NOT NULL"
        ),
        0
    );
    assert_eq!(meta(&server, &admin, MODEL).rounds, 1);

    // The plain mode, same clipped deltas, equal weights: the same global within the bound.
    let Some(plain_db) = database(backend, "secagg_ten_plain") else {
        return;
    };
    let plain_admin = token(&plain_db.url, "admin", true);
    let plain = Server::start(
        &plain_db.url,
        &["--round-updates", "10", "--clip-norm", "1"],
    );
    assert_eq!(put_model(&plain, &plain_admin, MODEL, &base).status, 200);
    for (i, c) in cs.iter().enumerate() {
        let t = token(&plain_db.url, &format!("client{i}"), false);
        let body = delta(&small_config(), clipped(c), 1, 5).to_bytes().unwrap();
        assert_eq!(push(&plain, &t, MODEL, &format!("k{i}"), body).status, 202);
    }
    let plain_global = pull(&plain, &plain_admin, MODEL);
    assert_eq!(plain_global.version, 2);
    let plain_flat: Vec<f64> = plain_global
        .head
        .to_flat()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_within(&global.head, &plain_flat, &q);
}

/// 3 of 10 leave after sending their masked input: the other 7 (t = 7) reveal their seeds'
/// shares and the round releases the mean of all 10.
fn three_dropouts_after_their_input_still_complete(backend: Backend) {
    let Some((db, admin, base)) = setup(backend, "secagg_dropouts") else {
        return;
    };
    let server = secagg_server(&db.url, "10", "2");
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let mut cs = clients(&db.url, 10, base.num_params());
    let mut stops = [Stop::Never; 10];
    for i in [1, 4, 8] {
        stops[i] = Stop::AfterInput;
    }
    let (v, _) = run_round(&server, &mut cs, &stops, |_| {});
    assert_eq!(v.phase, Phase::Done, "{v:?}");
    assert_eq!(v.survivors.len(), 10);
    let global = pull(&server, &admin, MODEL);
    let q = Quantizer::new(CLIP, 10).unwrap();
    assert_within(
        &global.head,
        &reference(&base, &cs, &(0..10).collect::<Vec<_>>()),
        &q,
    );

    // Two more leave after sharing in the next round: their masks are removed with their
    // reconstructed keys, and the mean is the other eight's.
    let mut stops = [Stop::Never; 10];
    stops[0] = Stop::AfterShare;
    stops[9] = Stop::AfterShare;
    let (v, _) = run_round(&server, &mut cs, &stops, |_| {});
    assert_eq!(v.phase, Phase::Done, "{v:?}");
    assert_eq!(v.survivors, (1..9).collect::<Vec<u32>>());
    let next = pull(&server, &admin, MODEL);
    assert_eq!(next.version, 3);
    assert_within(
        &next.head,
        &reference(&global.head, &cs, &(1..9).collect::<Vec<_>>()),
        &q,
    );
}

/// Below the threshold: 6 unmask answers of t = 7 fail the round — no new version, no round
/// recorded, the masked inputs emptied unread; 6 inputs fail it a phase earlier. The same
/// updates then join the next round and are counted once.
fn below_the_threshold_the_round_fails_safely(backend: Backend) {
    let Some((db, admin, base)) = setup(backend, "secagg_threshold") else {
        return;
    };
    let server = secagg_server(&db.url, "10", "2");
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let mut cs = clients(&db.url, 10, base.num_params());
    let mut stops = [Stop::Never; 10];
    for s in stops.iter_mut().take(4) {
        *s = Stop::AfterInput;
    }
    let (v, round) = run_round(&server, &mut cs, &stops, |_| {});
    assert_eq!(v.phase, Phase::Failed, "{v:?}");
    assert!(
        v.failure
            .as_deref()
            .unwrap()
            .contains("below the threshold 7"),
        "{v:?}"
    );
    assert_eq!(v.released_version, None);
    let unchanged = pull(&server, &admin, MODEL);
    assert_eq!(unchanged.version, 1);
    assert_eq!(unchanged.head.to_flat(), base.to_flat());
    assert_eq!(meta(&server, &admin, MODEL).rounds, 0);
    assert_eq!(
        query_i64(&db.url, "SELECT CAST(COUNT(*) AS BIGINT) FROM rounds"),
        0
    );
    assert_eq!(
        query_i64(
            &db.url,
            &format!(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM secagg_members WHERE round = {round} \
                 AND (masked_input IS NOT NULL OR unmask IS NOT NULL)"
            )
        ),
        0
    );
    assert_eq!(
        query_i64(
            &db.url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM secagg_shares"
        ),
        0
    );

    let mut stops = [Stop::Never; 10];
    for s in stops.iter_mut().take(4) {
        *s = Stop::AfterShare;
    }
    let (v, _) = run_round(&server, &mut cs, &stops, |_| {});
    assert_eq!(v.phase, Phase::Failed, "{v:?}");
    assert!(
        v.failure.as_deref().unwrap().contains("6 masked inputs"),
        "{v:?}"
    );
    assert_eq!(pull(&server, &admin, MODEL).version, 1);

    // The updates that missed both rounds join the third, once: the global moves by one mean.
    let (v, _) = run_round(&server, &mut cs, &[Stop::Never; 10], |_| {});
    assert_eq!(v.phase, Phase::Done, "{v:?}");
    let global = pull(&server, &admin, MODEL);
    assert_eq!(global.version, 2);
    let q = Quantizer::new(CLIP, 10).unwrap();
    assert_within(
        &global.head,
        &reference(&base, &cs, &(0..10).collect::<Vec<_>>()),
        &q,
    );
}

/// Each refusal is a typed error with a stable code, and changes nothing.
fn malformed_replayed_and_wrong_round_messages_are_refused(backend: Backend) {
    let Some((db, admin, base)) = setup(backend, "secagg_errors") else {
        return;
    };
    let server = secagg_server(&db.url, "3", "60");
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    assert_eq!(put_model(&server, &admin, "plain", &base).status, 200);
    let len = base.num_params();
    let mut cs = clients(&db.url, 4, len);
    let t0 = cs[0].token.clone();

    // A plain push to a secure model would store an unmasked delta: refused.
    let body = delta(&small_config(), vec![0.01; len], 1, 1)
        .to_bytes()
        .unwrap();
    assert_error(
        &push(&server, &t0, MODEL, "k", body),
        409,
        "secure_aggregation_required",
    );
    let r = request(
        &server,
        "GET",
        &current_path("plain"),
        &[("Authorization", &bearer(&t0))],
        vec![],
    );
    assert_error(&r, 409, "secure_aggregation_off");
    let r = request(&server, "GET", &current_path(MODEL), &[], vec![]);
    assert_error(&r, 401, "unauthorized");

    let v: RoundView = get(&server, &t0, &current_path(MODEL));
    let round = v.params.round;
    assert_eq!((v.params.cohort, v.params.threshold), (3, 3));
    let part = Participant::new(MODEL, v.params.clone()).unwrap();
    let ad = part.advertise();
    let advertise = step_path(MODEL, round, "advertise");
    // Garbage, bad keys, a body of another round.
    let r = request(
        &server,
        "POST",
        &advertise,
        &[("Authorization", &bearer(&t0))],
        b"{".to_vec(),
    );
    assert_error(&r, 400, "secagg_malformed");
    let bad = Advertise {
        cipher_pk: "zz".into(),
        ..ad.clone()
    };
    assert_error(
        &post(&server, &t0, &advertise, &bad).0,
        400,
        "secagg_malformed",
    );
    let other = Advertise {
        round: round + 1,
        ..ad.clone()
    };
    assert_error(
        &post(&server, &t0, &advertise, &other).0,
        409,
        "secagg_wrong_round",
    );
    assert_error(
        &post(
            &server,
            &t0,
            &step_path(MODEL, round + 5, "advertise"),
            &Advertise {
                round: round + 5,
                ..ad.clone()
            },
        )
        .0,
        404,
        "not_found",
    );
    // Joins; an identical retry is answered again; other keys are a replay.
    post(&server, &t0, &advertise, &ad).view();
    post(&server, &t0, &advertise, &ad).view();
    let again = Participant::new(MODEL, v.params.clone())
        .unwrap()
        .advertise();
    assert_error(
        &post(&server, &t0, &advertise, &again).0,
        409,
        "secagg_replayed",
    );
    // Another client copying member 0's keys: refused.
    assert_error(
        &post(&server, &cs[1].token, &advertise, &ad).0,
        400,
        "secagg_malformed",
    );
    // Shares before the share phase.
    let early = ShareUpload {
        round,
        from: 0,
        shares: vec![],
    };
    assert_error(
        &post(&server, &t0, &step_path(MODEL, round, "shares"), &early).0,
        409,
        "secagg_wrong_phase",
    );
    cs[0].part = Some(part);
    for c in cs.iter_mut().take(3).skip(1) {
        let p = Participant::new(MODEL, v.params.clone()).unwrap();
        post(&server, &c.token, &advertise, &p.advertise()).view();
        c.part = Some(p);
    }
    // The round is full (cohort 3) and in its share phase: a fourth client is no member.
    let outsider = Participant::new(MODEL, v.params.clone()).unwrap();
    assert_error(
        &post(&server, &cs[3].token, &advertise, &outsider.advertise()).0,
        409,
        "secagg_wrong_phase",
    );
    let shares_path = step_path(MODEL, round, "shares");
    assert_error(
        &post(&server, &cs[3].token, &shares_path, &early).0,
        403,
        "secagg_not_in_cohort",
    );
    // An upload missing a member's share, then the real ones.
    let v0 = view(&server, &cs[0], round);
    let mut upload = cs[0].part.as_mut().unwrap().share(&v0).unwrap();
    let full = upload.clone();
    upload.shares.pop();
    assert_error(
        &post(&server, &t0, &shares_path, &upload).0,
        400,
        "secagg_malformed",
    );
    post(&server, &t0, &shares_path, &full).view();
    post(&server, &t0, &shares_path, &full).view();
    for c in cs.iter_mut().take(3).skip(1) {
        let v = view(&server, c, round);
        let up = c.part.as_mut().unwrap().share(&v).unwrap();
        post(&server, &c.token, &shares_path, &up).view();
    }
    // Inputs: wrong length, wrong round, a replay with other content.
    let input_path = step_path(MODEL, round, "input");
    let mut inputs = Vec::new();
    for c in cs.iter_mut().take(3) {
        let v = view(&server, c, round);
        assert_eq!(v.phase, Phase::Input);
        let fy: SharesForYou = get(&server, &c.token, &shares_path);
        inputs.push(c.part.as_mut().unwrap().mask(&v, &fy, &c.delta).unwrap());
    }
    let short = MaskedInput {
        values: inputs[0].values[..16].to_string(),
        ..inputs[0].clone()
    };
    assert_error(
        &post(&server, &t0, &input_path, &short).0,
        400,
        "secagg_malformed",
    );
    let foreign = MaskedInput {
        round: round + 1,
        ..inputs[0].clone()
    };
    assert_error(
        &post(&server, &t0, &input_path, &foreign).0,
        409,
        "secagg_wrong_round",
    );
    // Member 1's input sent by member 0: refused (it would count member 1 twice).
    assert_error(
        &post(&server, &t0, &input_path, &inputs[1]).0,
        400,
        "secagg_malformed",
    );
    post(&server, &t0, &input_path, &inputs[0]).view();
    let mut tampered = inputs[0].clone();
    tampered.values.replace_range(
        0..2,
        if &tampered.values[0..2] == "00" {
            "01"
        } else {
            "00"
        },
    );
    assert_error(
        &post(&server, &t0, &input_path, &tampered).0,
        409,
        "secagg_replayed",
    );
    for (c, input) in cs.iter().zip(&inputs).skip(1) {
        post(&server, &c.token, &input_path, input).view();
    }
    // Unmask: revealing both secrets of a member is refused, never stored.
    let unmask_path = step_path(MODEL, round, "unmask");
    let v0 = view(&server, &cs[0], round);
    assert_eq!(v0.phase, Phase::Unmask);
    let response = cs[0].part.as_mut().unwrap().unmask(&v0).unwrap();
    let mut both = response.clone();
    both.key_shares.push(RevealedShare {
        of: 1,
        share: both.seed_shares[1].share.clone(),
    });
    assert_error(
        &post(&server, &t0, &unmask_path, &both).0,
        409,
        "secagg_equivocation",
    );
    let foreign = UnmaskResponse {
        round: round + 1,
        ..response.clone()
    };
    assert_error(
        &post(&server, &t0, &unmask_path, &foreign).0,
        409,
        "secagg_wrong_round",
    );
    for c in cs.iter_mut().take(3) {
        let v = view(&server, c, round);
        let r = c.part.as_mut().unwrap().unmask(&v).unwrap();
        post(&server, &c.token, &unmask_path, &r).view();
    }
    let done = view(&server, &cs[0], round);
    assert_eq!(done.phase, Phase::Done, "{done:?}");
    // After the round: every step is refused as of another phase.
    assert_error(
        &post(&server, &t0, &input_path, &inputs[0]).0,
        409,
        "secagg_wrong_phase",
    );
    let q = Quantizer::new(CLIP, 3).unwrap();
    assert_within(
        &pull(&server, &admin, MODEL).head,
        &reference(&base, &cs, &[0, 1, 2]),
        &q,
    );
}

/// Start-up refuses unsound settings.
fn bad_settings_stop_the_server(backend: Backend) {
    let Some(db) = database(backend, "secagg_settings") else {
        return;
    };
    for (args, says) in [
        (
            vec![
                "--secure-aggregation",
                "--round-updates",
                "10",
                "--secagg-threshold",
                "5",
            ],
            "strict majority",
        ),
        (
            vec!["--secure-aggregation", "--aggregator", "median"],
            "--aggregator mean",
        ),
        (
            vec!["--secure-aggregation", "--round-updates", "300"],
            "[1, 255]",
        ),
        (vec!["--secure-aggregation", "bad name!"], "model names"),
    ] {
        let err = serve_refused(&db.url, &args, &[]);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The environment variable turns it on like the flag.
    let server = Server::start_with_env(&db.url, &[], &[("TACIT_SECURE_AGGREGATION", "m,other")]);
    let admin = token(&db.url, "admin", true);
    let base = Head::init(&small_config(), 5).unwrap();
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let body = delta(&small_config(), vec![0.01; base.num_params()], 1, 1)
        .to_bytes()
        .unwrap();
    assert_error(
        &push(&server, &admin, MODEL, "k", body),
        409,
        "secure_aggregation_required",
    );
}

on_both_backends!(
    ten_clients_aggregate_to_the_plain_mean,
    three_dropouts_after_their_input_still_complete,
    below_the_threshold_the_round_fails_safely,
    malformed_replayed_and_wrong_round_messages_are_refused,
    bad_settings_stop_the_server,
);

/// A transport that goes offline for good after a POST to a path ending in `cut_after`
/// (a page closed mid-round).
struct LeavesAfter {
    inner: tacit_rm::sync::http::UreqTransport,
    cut_after: &'static str,
    gone: bool,
}

impl tacit_rm::sync::http::Transport for LeavesAfter {
    fn send(
        &mut self,
        request: &tacit_rm::sync::client::HttpRequest,
    ) -> Result<tacit_rm::sync::client::HttpResponse, String> {
        if self.gone {
            return Err("offline".into());
        }
        let answer = self.inner.send(request);
        if request.method == "POST" && request.path.ends_with(self.cut_after) {
            self.gone = true;
        }
        answer
    }
}

/// A sync client (the library's, with its offline queue) holding one committed delta.
fn queued_client(server: &Server, token: &str, values: &[f32]) -> tacit_rm::sync::SyncClient {
    use tacit_rm::sync::{delta, SyncClient, SyncConfig};
    let global = pull(server, token, MODEL);
    let mut config = SyncConfig::new(MODEL, token);
    config.clip_norm = CLIP;
    let local = delta::apply(&global.head, values).unwrap();
    let mut client = SyncClient::new(config, global, vec![], "q", 0).unwrap();
    let objective = tacit_rm::ObjectiveKind::parse("ips").unwrap();
    client.commit_local(&local, 5, objective, 0).unwrap();
    client
}

fn commit_more(client: &mut tacit_rm::sync::SyncClient, values: &[f32]) {
    let local = tacit_rm::sync::delta::apply(&client.reference().head, values).unwrap();
    let objective = tacit_rm::ObjectiveKind::parse("ips").unwrap();
    client.commit_local(&local, 5, objective, 0).unwrap();
}

/// The offline queue under secure aggregation, through `secagg::session` with real sync
/// clients: a member that leaves after its input is counted in that round and, when it comes
/// back, drops its push instead of offering it again; a round that fails keeps the pushes
/// queued, and they are counted in the next one — each push once.
fn the_offline_queue_is_counted_once_across_secure_rounds(backend: Backend) {
    use tacit_rm::sync::http::{secure_once, UreqTransport};
    use tacit_rm::sync::secagg::session::{SecureOutcome, SessionOptions};
    let Some((db, admin, base)) = setup(backend, "secagg_queue") else {
        return;
    };
    let server = Server::start(
        &db.url,
        &[
            "--secure-aggregation",
            MODEL,
            "--round-updates",
            "3",
            "--secagg-threshold",
            "2",
            "--round-seconds",
            "3",
            "--secagg-phase-seconds",
            "2",
            "--clip-norm",
            "1",
        ],
    );
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let len = base.num_params();
    let tokens: Vec<String> = (0..3)
        .map(|i| token(&db.url, &format!("q{i}"), false))
        .collect();
    let d: Vec<Vec<f32>> = (0..6).map(|i| values(len, 300 + i, 0.05)).collect();
    let mut clients: Vec<_> = (0..3)
        .map(|i| queued_client(&server, &tokens[i], &d[i]))
        .collect();
    let options = SessionOptions {
        poll_ms: 50,
        give_up_ms: 30_000,
    };
    let leaving = SessionOptions {
        poll_ms: 50,
        give_up_ms: 1_500,
    };
    let transport = || UreqTransport::new(&server.url, std::time::Duration::from_secs(30));
    let run = |clients: &mut [tacit_rm::sync::SyncClient], cut: &[Option<&'static str>]| {
        std::thread::scope(|s| {
            let handles: Vec<_> = clients
                .iter_mut()
                .zip(cut)
                .map(|(c, cut)| {
                    let mut t = LeavesAfter {
                        inner: transport(),
                        cut_after: cut.unwrap_or("never"),
                        gone: false,
                    };
                    let o = if cut.is_some() { leaving } else { options };
                    s.spawn(move || secure_once(c, &mut t, o))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect::<Vec<_>>()
        })
    };
    // Round 1: member 2 leaves after its input; the round is done with all three inputs.
    let out = run(&mut clients, &[None, None, Some("/input")]);
    assert!(
        matches!(
            out[0],
            SecureOutcome::Counted {
                pushes: 1,
                version: Some(2),
                ..
            }
        ),
        "{out:?}"
    );
    assert!(
        matches!(out[1], SecureOutcome::Counted { pushes: 1, .. }),
        "{out:?}"
    );
    assert!(matches!(out[2], SecureOutcome::Left { .. }), "{out:?}");
    assert_eq!(clients[2].queue().len(), 1);
    assert!(clients[2].state().secure_round.is_some());
    let v2 = pull(&server, &admin, MODEL);
    assert_eq!(v2.version, 2);
    let mean = |base: &Head, ds: &[&Vec<f32>]| -> Vec<f64> {
        base.to_flat()
            .iter()
            .enumerate()
            .map(|(j, b)| {
                f64::from(*b) + ds.iter().map(|d| f64::from(d[j])).sum::<f64>() / ds.len() as f64
            })
            .collect()
    };
    let q = Quantizer::new(CLIP, 3).unwrap();
    assert_within(&v2.head, &mean(&base, &[&d[0], &d[1], &d[2]]), &q);
    // Member 2 comes back: its round counted it, so its push leaves the queue unsent.
    let back = secure_once(&mut clients[2], &mut transport(), options).unwrap();
    assert!(
        matches!(back, SecureOutcome::Counted { pushes: 1, .. }),
        "{back:?}"
    );
    assert!(clients[2].queue().is_empty() && clients[2].state().secure_round.is_none());
    assert_eq!(
        secure_once(&mut clients[2], &mut transport(), options).unwrap(),
        SecureOutcome::Nothing
    );

    // Round 2: members 0 and 1 with new pushes; 1 leaves after joining, so one member shares
    // (below t = 2) and the round fails: both pushes stay queued.
    commit_more(&mut clients[0], &d[3]);
    commit_more(&mut clients[1], &d[4]);
    let out = run(&mut clients[..2], &[None, Some("/advertise")]);
    assert!(
        matches!(&out[0], SecureOutcome::NotCounted { reason, .. } if reason.contains("below the threshold")),
        "{out:?}"
    );
    assert!(matches!(out[1], SecureOutcome::Left { .. }), "{out:?}");
    assert_eq!((clients[0].queue().len(), clients[1].queue().len()), (1, 1));
    assert_eq!(pull(&server, &admin, MODEL).version, 2);
    // Round 3: they join again (the cohort closes on time with t = 2) and are counted once.
    let out = run(&mut clients[..2], &[None, None]);
    assert!(
        out.iter()
            .all(|o| matches!(o, SecureOutcome::Counted { pushes: 1, .. })),
        "{out:?}"
    );
    let v3 = pull(&server, &admin, MODEL);
    assert_eq!(v3.version, 3);
    assert_within(&v3.head, &mean(&v2.head, &[&d[3], &d[4]]), &q);
}

on_both_backends!(the_offline_queue_is_counted_once_across_secure_rounds);

/// Records every request a client sends.
struct Recording<'a> {
    inner: tacit_rm::sync::http::UreqTransport,
    sent: &'a std::sync::Mutex<Vec<(String, String, usize)>>,
}

impl tacit_rm::sync::http::Transport for Recording<'_> {
    fn send(
        &mut self,
        request: &tacit_rm::sync::client::HttpRequest,
    ) -> Result<tacit_rm::sync::client::HttpResponse, String> {
        self.sent.lock().unwrap().push((
            request.method.to_string(),
            request.path.clone(),
            request.body.len(),
        ));
        self.inner.send(request)
    }
}

/// The one sync pass (what `tacit sync` and the browser's `rm.sync` run) on a model the
/// server aggregates securely: it asks first and never pushes a plain delta; three clients
/// syncing at once form the round, each is counted once, pulls the released global (the
/// mean within the quantisation bound) and is told it sent its update masked, how many
/// bytes left, and the ε the model has spent (the server's `/privacy`, exactly).
fn the_sync_pass_takes_part_in_secure_rounds(backend: Backend) {
    use tacit_rm::sync::http::{sync_once_with, UreqTransport};
    use tacit_rm::sync::pass::{PassOptions, PrivacyStatus};
    use tacit_rm::sync::secagg::session::{SecureOutcome, SessionOptions};
    let Some((db, admin, base)) = setup(backend, "secagg_pass") else {
        return;
    };
    let server = Server::start(
        &db.url,
        &[
            "--secure-aggregation",
            MODEL,
            "--round-updates",
            "3",
            "--secagg-threshold",
            "2",
            "--round-seconds",
            "30",
            "--secagg-phase-seconds",
            "5",
            "--clip-norm",
            "1",
            "--dp-noise-multiplier",
            "0.001",
            "--population",
            "3",
            "--dp-budget-epsilon",
            "1e9",
        ],
    );
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let len = base.num_params();
    let d: Vec<Vec<f32>> = (0..3).map(|i| values(len, 500 + i, 0.05)).collect();
    let tokens: Vec<String> = (0..3)
        .map(|i| token(&db.url, &format!("p{i}"), false))
        .collect();
    let mut clients: Vec<_> = (0..3)
        .map(|i| queued_client(&server, &tokens[i], &d[i]))
        .collect();
    let options = PassOptions {
        retry_budget_ms: 0,
        fallback_objective: tacit_rm::ObjectiveKind::parse("ips").unwrap(),
        secure: SessionOptions {
            poll_ms: 50,
            give_up_ms: 60_000,
        },
    };
    let sent: Vec<std::sync::Mutex<Vec<(String, String, usize)>>> =
        (0..3).map(|_| Default::default()).collect();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .zip(&sent)
            .map(|(c, sent)| {
                let url = server.url.clone();
                s.spawn(move || {
                    let mut t = Recording {
                        inner: UreqTransport::new(&url, std::time::Duration::from_secs(30)),
                        sent,
                    };
                    let mut local = c.reference().head.clone();
                    let report = sync_once_with(c, &mut t, &mut local, options).unwrap();
                    (report, local)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let released = pull(&server, &admin, MODEL);
    assert_eq!(released.version, 2);
    let mean: Vec<f64> = base
        .to_flat()
        .iter()
        .enumerate()
        .map(|(j, b)| f64::from(*b) + d.iter().map(|d| f64::from(d[j])).sum::<f64>() / 3.0)
        .collect();
    // z = 10⁻³: noise of std z·C/3 ≈ 3.3·10⁻⁴ per coordinate, against deltas of ~0.05;
    // 6 std over 41 coordinates holds unless the sum is wrong (P(noise beyond) < 10⁻⁷).
    for (j, (g, w)) in released.head.to_flat().iter().zip(&mean).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() < 6.0 * 0.001 * CLIP / 3.0,
            "coordinate {j}: {g} vs the mean {w}"
        );
    }
    let privacy: tacit_rm::sync::privacy::PrivacyReport =
        get(&server, &admin, &format!("/v1/models/{MODEL}/privacy"));
    assert_eq!(privacy.rounds, 1);
    for (i, ((report, local), sent)) in reports.iter().zip(&sent).enumerate() {
        let sent = sent.lock().unwrap();
        assert!(
            sent.iter().all(|(_, path, _)| !path.ends_with("/updates")),
            "client {i} pushed a plain delta: {sent:?}"
        );
        assert!(
            sent.iter()
                .any(|(m, p, n)| m == "POST" && p.ends_with("/input") && *n > 0),
            "client {i}: {sent:?}"
        );
        assert_eq!(
            report.sent_bytes,
            sent.iter().map(|(_, _, n)| *n as u64).sum::<u64>()
        );
        assert!(report.masked, "client {i}");
        assert!(
            matches!(
                report.secure_round,
                Some(SecureOutcome::Counted {
                    pushes: 1,
                    version: Some(2),
                    ..
                })
            ),
            "client {i}: {report:?}"
        );
        assert_eq!((report.pushed, report.still_queued), (1, 0));
        assert_eq!(report.version, 2);
        assert_eq!(report.privacy, Some(PrivacyStatus::On(privacy)));
        // Everything it learned was in the round: the local weights are the released global.
        assert_eq!(local, &released.head, "client {i}");
    }
}

on_both_backends!(the_sync_pass_takes_part_in_secure_rounds);

/// DP-FedAvg on top: the noise is added after unmasking (the released global is the mean
/// plus noise of std z·C/cohort, visibly off the noiseless mean), `/privacy` counts the
/// round, and a round that would exceed the budget is not opened.
fn dp_noise_is_added_after_unmasking_within_the_budget(backend: Backend) {
    use tacit_rm::sync::privacy::PrivacyBudget;
    let Some((db, admin, base)) = setup(backend, "secagg_dp") else {
        return;
    };
    // q = 1 (cohort = population = 3), z = 4: a budget between ε after one and two rounds.
    let accountant = PrivacyBudget::new(4.0, 1.0, 1e-5, 100.0).unwrap();
    let (e1, e2) = (
        accountant.epsilon_after(1).unwrap().epsilon,
        accountant.epsilon_after(2).unwrap().epsilon,
    );
    let budget = format!("{}", (e1 + e2) / 2.0);
    let server = Server::start(
        &db.url,
        &[
            "--secure-aggregation",
            MODEL,
            "--round-updates",
            "3",
            "--secagg-phase-seconds",
            "60",
            "--clip-norm",
            "1",
            "--dp-noise-multiplier",
            "4",
            "--population",
            "3",
            "--dp-budget-epsilon",
            &budget,
        ],
    );
    assert_eq!(put_model(&server, &admin, MODEL, &base).status, 200);
    let mut cs = clients(&db.url, 3, base.num_params());
    let (v, _) = run_round(&server, &mut cs, &[Stop::Never; 3], |_| {});
    assert_eq!(v.phase, Phase::Done, "{v:?}");
    let global = pull(&server, &admin, MODEL);
    let noiseless = reference(&base, &cs, &[0, 1, 2]);
    let off = global
        .head
        .to_flat()
        .iter()
        .zip(&noiseless)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max);
    // std 4/3 per coordinate over 41 coordinates: the largest deviation is far above 0.1
    // (P(all below) < 1e-30), and a noiseless release would be within 1e-6.
    assert!(off > 0.1, "no noise was added: {off}");
    let r = request(
        &server,
        "GET",
        &format!("/v1/models/{MODEL}/privacy"),
        &[("Authorization", &bearer(&admin))],
        vec![],
    );
    let privacy: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(privacy["rounds"], 1, "{privacy}");
    assert!((privacy["epsilon"].as_f64().unwrap() - e1).abs() < 1e-9 * e1.max(1.0));
    // The budget allows no second round: none is opened, and nothing is released.
    let r = request(
        &server,
        "GET",
        &current_path(MODEL),
        &[("Authorization", &bearer(&cs[0].token))],
        vec![],
    );
    assert_error(&r, 422, "secagg_round_failed");
    assert!(String::from_utf8_lossy(&r.body).contains("privacy budget"));
    assert_eq!(pull(&server, &admin, MODEL).version, 2);
}

on_both_backends!(dp_noise_is_added_after_unmasking_within_the_budget);
