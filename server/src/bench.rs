//! `tacit-server bench`: a load and chaos run on loopback. It creates a 384→128→1 model and
//! one token per simulated client in a fresh database, starts `tacit-server serve` on it as a
//! child process (this same executable), and runs `clients` async tasks against it for
//! `seconds`:
//!
//! - honest clients push valid deltas (distinct idempotency keys), back-to-back; a
//!   connection error, a timeout or a 5xx is retried with the same key and body, a 429/503/507
//!   after its `Retry-After`; at the end each finishes the push in hand;
//! - ⌊clients × malicious_fraction⌋ malicious clients attack, one attack each, in turn:
//!   `n_examples` over the cap, deltas over the norm bound, NaN deltas, a wrong head shape, a
//!   flood of valid pushes under distinct keys ignoring `Retry-After` (10 a second against a
//!   limit of `client_pushes_per_minute`), garbage bodies, and idempotency keys reused with
//!   other content;
//! - `chaos_kills` times, at seeded random points of the middle 80 % of the run (one in each
//!   of `chaos_kills` equal slots), the server is SIGKILLed and restarted on the same
//!   database and port.
//!
//! Then the server is stopped and the database itself is read, to check what must hold
//! (any failure makes the command exit non-zero): every 202 an honest client received is
//! stored exactly once, as the update it named, with the content sent; nothing is stored
//! that no client sent, and of an honest client nothing but its acknowledged pushes and the
//! one it may have been cut off on; no malicious push was stored that should have been
//! refused, and each was refused with its code; rounds kept closing (after the last restart
//! too); the global is finite and at version 1 + rounds. Reported: accepted pushes per
//! second, p50/p99 latency of the accepted pushes, refusals by code, rounds closed, kills
//! survived, the database's size at the end.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::protocol::{self, ErrorBody, UpdateAccepted};
use tacit_rm::sync::Delta;
use tacit_rm::{Head, HeadConfig, ObjectiveKind};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::BenchArgs;
use crate::db::{Backend, Db};

const DIM: usize = 384;
const HIDDEN: usize = 128;
/// Distinct valid deltas, shared by all clients (each ≈ 198 KB).
const BODY_POOL: usize = 64;
/// The server's bounds during the run (its defaults).
const MAX_EXAMPLES: u64 = 1_000_000;
const MAX_NORM: f64 = 100.0;
/// One HTTP exchange; beyond it the client gives up on the answer and retries.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// After the run: how long honest clients may take to finish the push in hand.
const DRAIN: Duration = Duration::from_secs(90);
const ATTACK_INTERVAL: Duration = Duration::from_millis(500);
const FLOOD_INTERVAL: Duration = Duration::from_millis(100);
const FLOOD_IN_FLIGHT: usize = 32;

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.clients == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err("--clients and --seconds must be positive".into());
    }
    if !(0.0..=1.0).contains(&args.malicious_fraction) {
        return Err("--malicious-fraction must be in [0, 1]".into());
    }
    let scratch = std::env::temp_dir().join(format!("tacit-server-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let sqlite = format!("sqlite://{}", scratch.join("bench.db").display());
    let mut reports = vec![measure(&args, "sqlite", &sqlite).await];
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some(url) = &args.postgres {
        reports.push(measure(&args, "postgres", url).await);
    }
    let reports = reports.into_iter().collect::<Result<Vec<_>, _>>()?;
    let json = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown(&reports))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let violations: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            let storage = r["storage"].as_str().unwrap_or("").to_string();
            r["violations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |v| format!("{storage}: {}", v.as_str().unwrap_or("")))
        })
        .collect();
    if !violations.is_empty() {
        return Err(format!(
            "the accounting failed ({} violations):\n{}",
            violations.len(),
            violations.join("\n")
        ));
    }
    Ok(())
}

fn markdown(reports: &[serde_json::Value]) -> String {
    let mut md = String::from(
        "| storage | clients (malicious) | seconds | kills survived | honest pushes accepted | pushes/s | p50 ms | p99 ms | rounds closed | database at the end | accounting |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let violations = r["violations"].as_array().map_or(0, Vec::len);
        md += &format!(
            "| {} | {} ({}) | {:.1} | {} of {} | {} | {:.1} | {:.0} | {:.0} | {} | {:.1} MB | {} |\n",
            r["storage"].as_str().unwrap_or(""),
            r["clients"],
            r["malicious_clients"],
            r["seconds"].as_f64().unwrap_or(0.0),
            r["kills_survived"],
            r["kills"],
            r["accepted_pushes"],
            r["pushes_per_second"].as_f64().unwrap_or(0.0),
            r["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            r["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            r["rounds_closed"],
            r["database_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            if violations == 0 {
                "held".to_string()
            } else {
                format!("**{violations} violations**")
            },
        );
    }
    md += "\n| storage | clients | pushes | answers |\n|---|---|---|---|\n";
    let codes = |v: &serde_json::Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(code, n)| format!("{code} × {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for r in reports {
        let storage = r["storage"].as_str().unwrap_or("");
        let h = &r["honest"];
        md += &format!(
            "| {storage} | honest | {} | {}{}; {} connection errors, {} timeouts (retried); {} replayed 202s |\n",
            h["pushes"],
            codes(&h["answers"]),
            if h["unresolved"].as_u64().unwrap_or(0) > 0 {
                format!("; {} unresolved at the end", h["unresolved"])
            } else {
                String::new()
            },
            h["connection_errors"],
            h["timeouts"],
            h["replays"],
        );
        for (attack, a) in r["malicious"].as_object().into_iter().flatten() {
            md += &format!(
                "| {storage} | {attack} | {} | {}; {} connection errors |\n",
                a["pushes"],
                codes(&a["answers"]),
                a["connection_errors"],
            );
        }
    }
    md
}

/// A small deterministic generator (SplitMix64): kill points and garbage bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Attack {
    ExamplesOverCap,
    NormOverBound,
    NonFinite,
    WrongShape,
    Flood,
    Garbage,
    ReusedKey,
}

impl Attack {
    const ALL: [Attack; 7] = [
        Attack::ExamplesOverCap,
        Attack::NormOverBound,
        Attack::NonFinite,
        Attack::WrongShape,
        Attack::Flood,
        Attack::Garbage,
        Attack::ReusedKey,
    ];

    fn name(self) -> &'static str {
        match self {
            Attack::ExamplesOverCap => "examples-over-cap",
            Attack::NormOverBound => "norm-over-bound",
            Attack::NonFinite => "nan-delta",
            Attack::WrongShape => "wrong-shape",
            Attack::Flood => "flood",
            Attack::Garbage => "garbage-body",
            Attack::ReusedKey => "reused-key",
        }
    }

    /// The refusal its invalid pushes must get.
    fn expected(self) -> &'static str {
        match self {
            Attack::ExamplesOverCap => "examples_over_bound",
            Attack::NormOverBound => "norm_over_bound",
            Attack::NonFinite => "non_finite",
            Attack::WrongShape => "dims_mismatch",
            Attack::Flood => "rate_limited",
            Attack::Garbage => "malformed",
            Attack::ReusedKey => "idempotency_key_reused",
        }
    }
}

/// A body and the content hash the server stores for it (none for garbage).
struct Body {
    bytes: Vec<u8>,
    sha: String,
}

/// What every client task reads.
struct Ctx {
    addr: String,
    path: String,
    pool: Vec<Body>,
    attacks: BTreeMap<Attack, Body>,
    stop: AtomicBool,
    window_end: Instant,
    drain_deadline: Instant,
}

/// What one honest client did.
#[derive(Default)]
struct Honest {
    client: String,
    pushes: u64,
    /// (key, update id, content hash) of every 202, in order (a key once).
    acks: Vec<(String, u64, String)>,
    /// The push in hand when the drain deadline passed: stored or not.
    unresolved: Option<(String, String)>,
    accepted_in_window: u64,
    latencies_ms: Vec<f64>,
    replays: u64,
    answers: BTreeMap<String, u64>,
    connection_errors: u64,
    timeouts: u64,
    violations: Vec<String>,
}

/// What one malicious client did.
#[derive(Default)]
struct Malicious {
    client: String,
    attack: Option<Attack>,
    pushes: u64,
    /// Keys of its valid pushes (flood, a reused key's first use) and their content: the only
    /// rows it may have stored.
    valid: HashMap<String, String>,
    answers: BTreeMap<String, u64>,
    connection_errors: u64,
    violations: Vec<String>,
}

/// One measured run against one database.
async fn measure(args: &BenchArgs, storage: &str, url: &str) -> Result<serde_json::Value, String> {
    let db = crate::db::connect(url, 1).await?;
    let malicious_n = (args.clients as f64 * args.malicious_fraction).floor() as usize;
    let honest_n = args.clients - malicious_n;
    let run_id = crate::now_ms();
    let model = format!("bench-{run_id}");
    let config = HeadConfig::new(DIM, &[HIDDEN]);
    let head = Head::init(&config, 1).map_err(|e| e.to_string())?;
    let weights = store::to_bytes(&Weights::new(head)).map_err(|e| e.to_string())?;
    crate::models::put(&db, &model, &weights)
        .await
        .map_err(|e| e.message)?;
    eprintln!("bench {storage}: creating {} tokens", args.clients);
    let mut honest_tokens = Vec::new();
    for i in 0..honest_n {
        let client = format!("b{run_id}-h{i}");
        honest_tokens.push((
            client.clone(),
            crate::tokens::create(&db, &client, false, &[]).await?,
        ));
    }
    let mut malicious_tokens = Vec::new();
    for j in 0..malicious_n {
        let attack = Attack::ALL[j % Attack::ALL.len()];
        let client = format!("b{run_id}-m{j}-{}", attack.name());
        malicious_tokens.push((
            client.clone(),
            attack,
            crate::tokens::create(&db, &client, false, &[]).await?,
        ));
    }
    let mut rng = Rng(args.seed ^ 0x7ac1_7000);
    let (pool, attacks) = bodies(&config, &mut rng)?;

    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let server_args = vec![
        "serve".to_string(),
        "--listen".into(),
        addr.clone(),
        "--db".into(),
        url.to_string(),
        "--db-connections".into(),
        "8".into(),
        "--round-updates".into(),
        args.round_updates.clamp(1, args.clients as u64).to_string(),
        "--round-seconds".into(),
        "5".into(),
        // The clients never pull, so their base grows old as rounds close.
        "--max-staleness".into(),
        "1000000000".into(),
        "--client-pushes-per-minute".into(),
        args.client_pushes_per_minute.max(1).to_string(),
        "--max-examples-per-update".into(),
        MAX_EXAMPLES.to_string(),
        "--max-update-norm".into(),
        MAX_NORM.to_string(),
    ];
    let mut server = ServerProcess::start(server_args).await?;
    // One kill at a random point of each of `chaos_kills` equal slots of the middle 80 %.
    let slot = 0.8 / args.chaos_kills.max(1) as f64;
    let kill_at: Vec<f64> = (0..args.chaos_kills)
        .map(|k| args.seconds * (0.1 + slot * (k as f64 + rng.unit())))
        .collect();

    eprintln!(
        "bench {storage}: {honest_n} honest and {malicious_n} malicious clients for {} s, {} kills",
        args.seconds, args.chaos_kills
    );
    let start = Instant::now();
    let window = Duration::from_secs_f64(args.seconds);
    let ctx = Arc::new(Ctx {
        addr,
        path: protocol::updates_path(&model),
        pool,
        attacks,
        stop: AtomicBool::new(false),
        window_end: start + window,
        drain_deadline: start + window + DRAIN,
    });
    let honest_tasks: Vec<_> = honest_tokens
        .into_iter()
        .enumerate()
        .map(|(i, (client, token))| tokio::spawn(honest(ctx.clone(), i, client, token)))
        .collect();
    let malicious_tasks: Vec<_> = malicious_tokens
        .into_iter()
        .enumerate()
        .map(|(j, (client, attack, token))| {
            tokio::spawn(malicious(ctx.clone(), j, client, attack, token))
        })
        .collect();

    let mut kills_survived = 0u64;
    let mut rounds_at_last_restart = 0u64;
    for at in &kill_at {
        tokio::time::sleep_until((start + Duration::from_secs_f64(*at)).into()).await;
        server.kill();
        eprintln!("bench {storage}: SIGKILL at {at:.1} s");
        server.restart().await?;
        kills_survived += 1;
        rounds_at_last_restart = rounds(&db, &model).await?;
    }
    tokio::time::sleep_until(ctx.window_end.into()).await;
    ctx.stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut honest_records = Vec::new();
    for t in honest_tasks {
        honest_records.push(t.await.map_err(|e| e.to_string())?);
    }
    let mut malicious_records = Vec::new();
    for t in malicious_tasks {
        malicious_records.push(t.await.map_err(|e| e.to_string())?);
    }
    eprintln!(
        "bench {storage}: clients done {:.1} s after the run; stopping the server",
        start.elapsed().as_secs_f64() - elapsed
    );
    server.terminate();
    // On Postgres the backends of a killed server outlive it; count once they are gone.
    settle(&db).await?;

    let mut violations = Vec::new();
    let rows = stored_rows(&db, &model).await?;
    violations.extend(check_honest(&honest_records, &rows));
    violations.extend(check_malicious(&malicious_records, &rows));
    violations.extend(check_rate(&rows, args.client_pushes_per_minute.max(1)));
    let known: std::collections::HashSet<&str> = honest_records
        .iter()
        .map(|h| h.client.as_str())
        .chain(malicious_records.iter().map(|m| m.client.as_str()))
        .collect();
    for client in rows.keys() {
        if !known.contains(client.as_str()) {
            violations.push(format!("rows stored for '{client}', which is no client"));
        }
    }
    let meta = crate::models::meta(&db, &model)
        .await
        .map_err(|e| e.message)?;
    let (version, weights) = crate::models::weights(&db, &model)
        .await
        .map_err(|e| e.message)?;
    let global = store::from_bytes(&weights).map_err(|e| e.to_string())?;
    let finite = global.head.is_finite();
    if !finite {
        violations.push("the global holds NaN or infinite weights".into());
    }
    if version != 1 + meta.rounds {
        violations.push(format!(
            "the global is at version {version} after {} rounds",
            meta.rounds
        ));
    }
    if meta.rounds == 0 {
        violations.push("no round closed".into());
    }
    let rounds_after_last_restart = meta.rounds - rounds_at_last_restart.min(meta.rounds);
    if kills_survived > 0 && rounds_after_last_restart == 0 {
        violations.push("no round closed after the last restart".into());
    }
    let stored: usize = rows.values().map(HashMap::len).sum();
    if meta.accepted_updates as usize != stored {
        violations.push(format!(
            "meta counts {} updates, the table holds {stored}",
            meta.accepted_updates
        ));
    }
    let database_bytes = database_size(&db, url).await?;
    db.pool.close().await;
    for h in &honest_records {
        violations.extend(h.violations.iter().cloned());
    }
    for m in &malicious_records {
        violations.extend(m.violations.iter().cloned());
    }

    let mut latencies: Vec<f64> = honest_records
        .iter()
        .flat_map(|h| h.latencies_ms.iter().copied())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let accepted: u64 = honest_records.iter().map(|h| h.accepted_in_window).sum();
    let sum_codes = |maps: &mut dyn Iterator<Item = &BTreeMap<String, u64>>| {
        let mut total = BTreeMap::<String, u64>::new();
        for m in maps {
            for (code, n) in m {
                *total.entry(code.clone()).or_default() += n;
            }
        }
        total
    };
    let mut by_attack = serde_json::Map::new();
    for attack in Attack::ALL {
        let of: Vec<&Malicious> = malicious_records
            .iter()
            .filter(|m| m.attack == Some(attack))
            .collect();
        if of.is_empty() {
            continue;
        }
        by_attack.insert(
            attack.name().to_string(),
            serde_json::json!({
                "clients": of.len(),
                "pushes": of.iter().map(|m| m.pushes).sum::<u64>(),
                "answers": sum_codes(&mut of.iter().map(|m| &m.answers)),
                "connection_errors": of.iter().map(|m| m.connection_errors).sum::<u64>(),
            }),
        );
    }
    let report = serde_json::json!({
        "storage": storage,
        "head": format!("{DIM}->{HIDDEN}->1"),
        "num_params": config.num_params(),
        "clients": args.clients,
        "honest_clients": honest_n,
        "malicious_clients": malicious_n,
        "seconds": elapsed,
        "kills": args.chaos_kills,
        "kill_points_s": kill_at,
        "kills_survived": kills_survived,
        "accepted_pushes": accepted,
        "pushes_per_second": accepted as f64 / elapsed,
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
        "honest": {
            "pushes": honest_records.iter().map(|h| h.pushes).sum::<u64>(),
            "acknowledged": honest_records.iter().map(|h| h.acks.len()).sum::<usize>(),
            "unresolved": honest_records.iter().filter(|h| h.unresolved.is_some()).count(),
            "replays": honest_records.iter().map(|h| h.replays).sum::<u64>(),
            "answers": sum_codes(&mut honest_records.iter().map(|h| &h.answers)),
            "connection_errors": honest_records.iter().map(|h| h.connection_errors).sum::<u64>(),
            "timeouts": honest_records.iter().map(|h| h.timeouts).sum::<u64>(),
        },
        "malicious": by_attack,
        "malicious_valid_stored": rows
            .iter()
            .filter(|(c, _)| c.contains("-m"))
            .map(|(_, r)| r.len())
            .sum::<usize>(),
        "stored_updates": stored,
        "rounds_closed": meta.rounds,
        "rounds_after_last_restart": rounds_after_last_restart,
        "global_finite": finite,
        "database_bytes": database_bytes,
        "round_updates": args.round_updates,
        "client_pushes_per_minute": args.client_pushes_per_minute,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "violations": violations,
    });
    Ok(report)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Stored updates of `model`: client → key → (id, content hash, received_at ms).
type Rows = BTreeMap<String, HashMap<String, (u64, String, i64)>>;

async fn stored_rows(db: &Db, model: &str) -> Result<Rows, String> {
    let rows = sqlx::query(
        "SELECT id, client, idempotency_key, content_sha256, received_at FROM updates \
         WHERE model = $1",
    )
    .bind(model)
    .fetch_all(&db.pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Rows::new();
    for r in rows {
        let client: String = r.try_get("client").map_err(|e| e.to_string())?;
        let key: String = r.try_get("idempotency_key").map_err(|e| e.to_string())?;
        let id: i64 = r.try_get("id").map_err(|e| e.to_string())?;
        let sha: String = r.try_get("content_sha256").map_err(|e| e.to_string())?;
        let at: i64 = r.try_get("received_at").map_err(|e| e.to_string())?;
        // (model, client, key) is unique in the schema; checked here all the same.
        if out
            .entry(client.clone())
            .or_default()
            .insert(key.clone(), (id as u64, sha, at))
            .is_some()
        {
            return Err(format!("{client} {key} is stored twice"));
        }
    }
    Ok(out)
}

/// Every 202 stored as answered; nothing else stored but the push in hand at the end.
fn check_honest(records: &[Honest], rows: &Rows) -> Vec<String> {
    let empty = HashMap::new();
    let mut violations = Vec::new();
    for h in records {
        let mine = rows.get(&h.client).unwrap_or(&empty);
        let mut acked = std::collections::HashSet::new();
        for (key, id, sha) in &h.acks {
            acked.insert(key.as_str());
            match mine.get(key) {
                Some((stored_id, stored_sha, _)) if stored_id == id && stored_sha == sha => {}
                Some((stored_id, _, _)) => violations.push(format!(
                    "{} {key}: the 202 named update {id}, the database holds {stored_id} with other content or id",
                    h.client
                )),
                None => violations.push(format!(
                    "{} {key}: acknowledged (update {id}) but not stored",
                    h.client
                )),
            }
        }
        for (key, (id, sha, _)) in mine {
            if acked.contains(key.as_str()) {
                continue;
            }
            match &h.unresolved {
                Some((k, s)) if k == key && s == sha => {}
                _ => violations.push(format!(
                    "{} {key}: update {id} is stored but was never acknowledged",
                    h.client
                )),
            }
        }
    }
    violations
}

/// A malicious client stored valid pushes only, each with the content of its first use.
fn check_malicious(records: &[Malicious], rows: &Rows) -> Vec<String> {
    let mut violations = Vec::new();
    for m in records {
        for (key, (id, sha, _)) in rows.get(&m.client).into_iter().flatten() {
            match m.valid.get(key) {
                Some(s) if s == sha => {}
                Some(_) => violations.push(format!(
                    "{} {key}: update {id} holds the reused key's second content",
                    m.client
                )),
                None => violations.push(format!(
                    "{} {key}: update {id} was stored, the push should have been refused",
                    m.client
                )),
            }
        }
    }
    violations
}

/// No client stored more than `limit` updates in any sliding minute: the row that would
/// be the (limit + 1)-th in a minute must have been refused.
fn check_rate(rows: &Rows, limit: u64) -> Vec<String> {
    let limit = limit as usize;
    let mut violations = Vec::new();
    for (client, mine) in rows {
        let mut at: Vec<i64> = mine.values().map(|r| r.2).collect();
        at.sort_unstable();
        if let Some(k) =
            (0..at.len().saturating_sub(limit)).find(|&k| at[k + limit] - at[k] < 60_000)
        {
            violations.push(format!(
                "{client} stored {} updates within {} ms (limit {limit} a minute)",
                limit + 1,
                at[k + limit] - at[k]
            ));
        }
    }
    violations
}

async fn rounds(db: &Db, model: &str) -> Result<u64, String> {
    Ok(crate::models::meta(db, model)
        .await
        .map_err(|e| e.message)?
        .rounds)
}

/// Waits until no backend but ours is connected (Postgres; nothing to wait for on SQLite).
async fn settle(db: &Db) -> Result<(), String> {
    if db.backend != Backend::Postgres {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend'",
        )
        .fetch_one(&db.pool)
        .await
        .map_err(|e| e.to_string())?;
        if others == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{others} backends of the server are still running"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn database_size(db: &Db, url: &str) -> Result<u64, String> {
    match db.backend {
        Backend::Postgres => {
            let n: i64 =
                sqlx::query_scalar("SELECT CAST(pg_database_size(current_database()) AS BIGINT)")
                    .fetch_one(&db.pool)
                    .await
                    .map_err(|e| e.to_string())?;
            Ok(n as u64)
        }
        Backend::Sqlite => {
            let file = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let file = file.split('?').next().unwrap_or(file);
            let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            Ok(size(file.to_string()) + size(format!("{file}-wal")))
        }
    }
}

async fn honest(ctx: Arc<Ctx>, i: usize, client: String, token: String) -> Honest {
    let mut rec = Honest {
        client,
        ..Honest::default()
    };
    let mut conn = Conn::new(&ctx.addr, &token);
    let mut rng = Rng(i as u64);
    let mut n = 0usize;
    while !ctx.stop.load(Ordering::Relaxed) {
        let key = format!("h{i}-{n}");
        let body = &ctx.pool[(i * 7 + n) % ctx.pool.len()];
        n += 1;
        rec.pushes += 1;
        let mut backoff = 0.05f64;
        loop {
            let now = Instant::now();
            if now > ctx.drain_deadline {
                rec.unresolved = Some((key.clone(), body.sha.clone()));
                break;
            }
            let mut wait = None;
            match conn.post(&ctx.path, &key, &body.bytes).await {
                Ok(a) if a.status == 202 => {
                    let done = Instant::now();
                    match serde_json::from_slice::<UpdateAccepted>(&a.body) {
                        Ok(answer) => {
                            rec.acks
                                .push((key.clone(), answer.update_id, body.sha.clone()));
                        }
                        Err(e) => rec
                            .violations
                            .push(format!("{} {key}: unreadable 202 body: {e}", rec.client)),
                    }
                    rec.replays += u64::from(a.replayed);
                    *rec.answers.entry("accepted".into()).or_default() += 1;
                    if done <= ctx.window_end {
                        rec.accepted_in_window += 1;
                        rec.latencies_ms.push((done - now).as_secs_f64() * 1000.0);
                    }
                    break;
                }
                Ok(a) => {
                    let code = a.code();
                    *rec.answers.entry(code.clone()).or_default() += 1;
                    match a.status {
                        // Honour the server's word on when to come back.
                        429 | 503 | 507 => {
                            wait = Some(a.retry_after.unwrap_or(1).clamp(1, 120) as f64)
                        }
                        500..=599 => {}
                        _ => {
                            rec.violations.push(format!(
                                "{} {key}: an honest push was refused ({} {code})",
                                rec.client, a.status
                            ));
                            break;
                        }
                    }
                }
                Err(Failure::Timeout) => rec.timeouts += 1,
                Err(Failure::Connection) => rec.connection_errors += 1,
            }
            // Retry the same key and body: stored at most once, whatever happened.
            let pause = wait.unwrap_or_else(|| {
                backoff = (backoff * 2.0).min(2.0);
                backoff * (0.5 + rng.unit())
            });
            let until = (Instant::now() + Duration::from_secs_f64(pause)).min(ctx.drain_deadline);
            tokio::time::sleep_until(until.into()).await;
        }
    }
    rec
}

async fn malicious(
    ctx: Arc<Ctx>,
    j: usize,
    client: String,
    attack: Attack,
    token: String,
) -> Malicious {
    let mut rec = Malicious {
        client,
        attack: Some(attack),
        ..Malicious::default()
    };
    if attack == Attack::Flood {
        return flood(ctx, j, rec, token).await;
    }
    let mut conn = Conn::new(&ctx.addr, &token);
    let mut next = Instant::now();
    let mut n = 0usize;
    while !ctx.stop.load(Ordering::Relaxed) {
        let key = format!("m{j}-{n}");
        let valid = &ctx.pool[(j * 13 + n) % ctx.pool.len()];
        n += 1;
        let body = if attack == Attack::ReusedKey {
            rec.valid.insert(key.clone(), valid.sha.clone());
            valid
        } else {
            &ctx.attacks[&attack]
        };
        let first = send_attack(&mut conn, &ctx, &mut rec, &key, body, attack, true).await;
        if attack == Attack::ReusedKey && first {
            // The key again, with other content: refused, and the first content stays.
            let other = &ctx.pool[(j * 13 + n) % ctx.pool.len()];
            send_attack(&mut conn, &ctx, &mut rec, &key, other, attack, false).await;
        }
        next += ATTACK_INTERVAL;
        tokio::time::sleep_until(next.into()).await;
        next = next.max(Instant::now());
    }
    rec
}

/// Valid pushes under distinct keys, one every `FLOOD_INTERVAL` whatever the answers (up to
/// `FLOOD_IN_FLIGHT` at once, each on a connection of its own), ignoring `Retry-After`: the
/// rate limit must hold them to `client_pushes_per_minute`.
async fn flood(ctx: Arc<Ctx>, j: usize, mut rec: Malicious, token: String) -> Malicious {
    let mut in_flight = tokio::task::JoinSet::<(String, Result<Answer, Failure>)>::new();
    let mut next = Instant::now();
    let mut n = 0usize;
    while !ctx.stop.load(Ordering::Relaxed) {
        while in_flight.len() >= FLOOD_IN_FLIGHT {
            if let Some(Ok((key, result))) = in_flight.join_next().await {
                record(&mut rec, &key, Attack::Flood, true, result);
            }
        }
        while let Some(done) = in_flight.try_join_next() {
            if let Ok((key, result)) = done {
                record(&mut rec, &key, Attack::Flood, true, result);
            }
        }
        let key = format!("m{j}-{n}");
        let b = (j * 13 + n) % ctx.pool.len();
        n += 1;
        rec.valid.insert(key.clone(), ctx.pool[b].sha.clone());
        rec.pushes += 1;
        let (ctx2, token) = (ctx.clone(), token.clone());
        in_flight.spawn(async move {
            let mut conn = Conn::new(&ctx2.addr, &token);
            let result = conn.post(&ctx2.path, &key, &ctx2.pool[b].bytes).await;
            (key, result)
        });
        next += FLOOD_INTERVAL;
        tokio::time::sleep_until(next.into()).await;
        next = next.max(Instant::now());
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok((key, result)) = done {
            record(&mut rec, &key, Attack::Flood, true, result);
        }
    }
    rec
}

/// Sends one attack push and checks its answer; returns whether it got a 202.
async fn send_attack(
    conn: &mut Conn,
    ctx: &Ctx,
    rec: &mut Malicious,
    key: &str,
    body: &Body,
    attack: Attack,
    first: bool,
) -> bool {
    rec.pushes += 1;
    let result = conn.post(&ctx.path, key, &body.bytes).await;
    record(rec, key, attack, first, result)
}

/// Counts an attack push's answer and checks it; returns whether it got a 202.
fn record(
    rec: &mut Malicious,
    key: &str,
    attack: Attack,
    first: bool,
    result: Result<Answer, Failure>,
) -> bool {
    let a = match result {
        Ok(a) => a,
        Err(_) => {
            rec.connection_errors += 1;
            return false;
        }
    };
    let code = a.code();
    *rec.answers.entry(code.clone()).or_default() += 1;
    let valid = first && matches!(attack, Attack::Flood | Attack::ReusedKey);
    let allowed = if valid {
        // A valid push: stored, or refused by the rate limit.
        code == "accepted" || code == "rate_limited"
    } else {
        code == attack.expected()
    };
    if !allowed {
        rec.violations.push(format!(
            "{} {key} ({}): answered {} {code}, expected {}",
            rec.client,
            attack.name(),
            a.status,
            if valid {
                "accepted or rate_limited"
            } else {
                attack.expected()
            }
        ));
    }
    if a.status == 429 && a.retry_after.is_none() {
        rec.violations
            .push(format!("{} {key}: a 429 without Retry-After", rec.client));
    }
    a.status == 202
}

/// The valid deltas and one body per invalid attack.
fn bodies(
    config: &HeadConfig,
    rng: &mut Rng,
) -> Result<(Vec<Body>, BTreeMap<Attack, Body>), String> {
    let objective = ObjectiveKind::parse("ips").map_err(|e| e.to_string())?;
    let delta = |values: Vec<f32>, config: &HeadConfig, n_examples: u64| Delta {
        config: config.clone(),
        values,
        base_version: 1,
        n_examples,
        objective,
    };
    let encode = |d: Delta| -> Result<Body, String> {
        Ok(Body {
            bytes: d.to_bytes().map_err(|e| e.to_string())?,
            sha: crate::updates::content_hash(&d),
        })
    };
    let small = |seed: u64| -> Result<Vec<f32>, String> {
        let noise = Head::init(config, seed).map_err(|e| e.to_string())?;
        Ok(noise.to_flat().iter().map(|v| v * 1e-3).collect())
    };
    let mut pool = Vec::new();
    for j in 0..BODY_POOL {
        pool.push(encode(delta(
            small(1000 + j as u64)?,
            config,
            1 + (j % 4) as u64,
        ))?);
    }
    let mut attacks = BTreeMap::new();
    attacks.insert(
        Attack::ExamplesOverCap,
        encode(delta(small(7)?, config, MAX_EXAMPLES * 1000))?,
    );
    attacks.insert(
        Attack::NormOverBound,
        encode(delta(vec![10.0; config.num_params()], config, 1))?,
    );
    // A valid delta whose last value (the end of the data section) is made NaN.
    let mut nan = encode(delta(small(8)?, config, 1))?;
    let len = nan.bytes.len();
    nan.bytes[len - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    attacks.insert(Attack::NonFinite, nan);
    let other = HeadConfig::new(32, &[8]);
    let other_values = Head::init(&other, 9)
        .map_err(|e| e.to_string())?
        .to_flat()
        .iter()
        .map(|v| v * 1e-3)
        .collect();
    attacks.insert(Attack::WrongShape, encode(delta(other_values, &other, 1))?);
    attacks.insert(
        Attack::Garbage,
        Body {
            bytes: (0..4096).map(|_| rng.next() as u8).collect(),
            sha: String::new(),
        },
    );
    Ok((pool, attacks))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `tacit-server serve` as a child process, so that it can be SIGKILLed.
struct ServerProcess {
    args: Vec<String>,
    child: std::process::Child,
    /// Kept open: the server's stdout is a pipe whose reader must not go away.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl ServerProcess {
    async fn start(args: Vec<String>) -> Result<ServerProcess, String> {
        tokio::task::spawn_blocking(move || {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // Right after a kill the port may still be held for a moment: try for a while.
            let mut last = String::new();
            for _ in 0..50 {
                let mut child = std::process::Command::new(&exe)
                    .args(&args)
                    .env(
                        "RUST_LOG",
                        // Waiting for SQLite's one connection is the point of the load, not news.
                        std::env::var("RUST_LOG")
                            .unwrap_or_else(|_| "warn,sqlx::pool::acquire=error".into()),
                    )
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
                let mut stdout =
                    std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
                let mut line = String::new();
                let _ = stdout.read_line(&mut line);
                if line.starts_with("listening on ") {
                    return Ok(ServerProcess {
                        args,
                        child,
                        _stdout: stdout,
                    });
                }
                let _ = child.kill();
                let _ = child.wait();
                last = line;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(format!("the server did not start (last output {last:?})"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) -> Result<(), String> {
        *self = ServerProcess::start(self.args.clone()).await?;
        Ok(())
    }

    /// SIGTERM (graceful: requests in flight finish), SIGKILL if it has not exited in 30 s.
    fn terminate(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

/// An answer, as far as the clients read it.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    replayed: bool,
    body: Vec<u8>,
}

impl Answer {
    /// `accepted` for a 202, else the error body's code (or `http_STATUS`).
    fn code(&self) -> String {
        if self.status == 202 {
            return "accepted".into();
        }
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|b| b.code)
            .unwrap_or_else(|_| format!("http_{}", self.status))
    }
}

enum Failure {
    Timeout,
    Connection,
}

/// A minimal HTTP/1.1 client over one keep-alive connection: the request body is written
/// while the answer is read, so that an answer sent before the body was read (a 429 or a
/// 413) is seen rather than lost to a broken pipe.
struct Conn {
    addr: String,
    token: String,
    stream: Option<TcpStream>,
}

impl Conn {
    fn new(addr: &str, token: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            token: token.to_string(),
            stream: None,
        }
    }

    /// POSTs `body` under `key`.
    async fn post(&mut self, path: &str, key: &str, body: &[u8]) -> Result<Answer, Failure> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{}: {key}\r\n\
             Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.token,
            protocol::IDEMPOTENCY_KEY,
            protocol::SAFETENSORS,
            body.len()
        );
        for _ in 0..2 {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&self.addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        self.stream = Some(s);
                    }
                    Ok(Err(_)) => return Err(Failure::Connection),
                    Err(_) => return Err(Failure::Timeout),
                }
            }
            let stream = self.stream.as_mut().expect("connected above");
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, head.as_bytes(), body))
                .await
            {
                Ok(Ok((answer, keep))) => {
                    if !keep {
                        self.stream = None;
                    }
                    return Ok(answer);
                }
                Ok(Err(_)) => {
                    self.stream = None;
                    // A kept-alive connection the server closed meanwhile: once more on a
                    // fresh one (the key makes a repeat harmless).
                    if reused {
                        continue;
                    }
                    return Err(Failure::Connection);
                }
                Err(_) => {
                    self.stream = None;
                    return Err(Failure::Timeout);
                }
            }
        }
        Err(Failure::Connection)
    }
}

/// One request and its answer; also whether the connection may be reused.
async fn exchange(
    stream: &mut TcpStream,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<(Answer, bool)> {
    let (r, mut w) = stream.split();
    let mut reader = BufReader::new(r);
    let write = async {
        w.write_all(head).await?;
        w.write_all(body).await?;
        w.flush().await
    };
    let read = read_answer(&mut reader);
    tokio::pin!(write);
    tokio::pin!(read);
    let mut wrote = None;
    let (answer, close) = loop {
        tokio::select! {
            done = &mut write, if wrote.is_none() => wrote = Some(done.is_ok()),
            answer = &mut read => break answer?,
        }
    };
    Ok((answer, wrote == Some(true) && !close))
}

/// Reads one answer: status line, headers, a `Content-Length` or chunked body (or one up to
/// the end of the connection). Returns it and whether the server will close.
async fn read_answer<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<(Answer, bool)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let (mut length, mut chunked, mut close, mut retry_after, mut replayed) =
        (None, false, false, None, false);
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad("header"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "retry-after" => retry_after = value.parse().ok(),
            "idempotent-replayed" => replayed = value == "true",
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line).await?;
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..]).await?;
            line.clear();
            r.read_line(&mut line).await?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).await?;
    } else {
        r.read_to_end(&mut body).await?;
        close = true;
    }
    Ok((
        Answer {
            status,
            retry_after,
            replayed,
            body,
        },
        close,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each invalid attack's body fails where the server reads it with the code expected.
    #[test]
    fn attack_bodies_are_refused_for_their_reason() {
        let config = HeadConfig::new(DIM, &[HIDDEN]);
        let (pool, attacks) = bodies(&config, &mut Rng(3)).unwrap();
        for b in &pool {
            let d = Delta::from_bytes(&b.bytes).unwrap();
            assert_eq!(crate::updates::content_hash(&d), b.sha);
            assert!(tacit_rm::sync::delta::l2_norm(&d.values) < MAX_NORM);
        }
        let nan = Delta::from_bytes(&attacks[&Attack::NonFinite].bytes).unwrap_err();
        assert!(matches!(nan, tacit_rm::Error::NonFinite { .. }), "{nan}");
        assert!(Delta::from_bytes(&attacks[&Attack::Garbage].bytes).is_err());
        let over = Delta::from_bytes(&attacks[&Attack::NormOverBound].bytes).unwrap();
        assert!(tacit_rm::sync::delta::l2_norm(&over.values) > MAX_NORM);
        let many = Delta::from_bytes(&attacks[&Attack::ExamplesOverCap].bytes).unwrap();
        assert!(many.n_examples > MAX_EXAMPLES);
        let shape = Delta::from_bytes(&attacks[&Attack::WrongShape].bytes).unwrap();
        assert_ne!(shape.config.hidden, config.hidden);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[tokio::test]
    async fn answers_are_read_with_length_or_chunks() {
        let raw =
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 2\r\n\r\n{}";
        let (a, close) = read_answer(&mut &raw[..]).await.unwrap();
        assert_eq!((a.status, a.retry_after, close), (429, Some(7), false));
        let raw = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nIdempotent-Replayed: true\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        let (a, _) = read_answer(&mut &raw[..]).await.unwrap();
        assert_eq!((a.status, a.replayed, a.body), (202, true, b"abc".to_vec()));
    }
}
