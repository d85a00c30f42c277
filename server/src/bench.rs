//! `tacit-server bench`: sustained pushes per second on loopback. It starts the real server
//! (same router, storage and round logic) in this process on a free port, creates a
//! 384→128→1 model and one token per client, and has `clients` threads push pre-encoded
//! deltas (distinct idempotency keys, blocking HTTP) for `seconds`; rounds close when
//! `round_updates` clients (at most all of them) have pushed, so aggregation is part of the cost measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tacit_rm::store::{self, Weights};
use tacit_rm::sync::client::HttpRequest;
use tacit_rm::sync::http::{Transport, UreqTransport};
use tacit_rm::sync::protocol;
use tacit_rm::sync::Delta;
use tacit_rm::{Head, HeadConfig, ObjectiveKind};

use crate::config::{AggregatorName, BenchArgs, Policy};

const DIM: usize = 384;
const HIDDEN: usize = 128;
/// Distinct deltas each client cycles through.
const BODIES_PER_CLIENT: usize = 4;

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.clients == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err("--clients and --seconds must be positive".into());
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
        let mut md = String::from(
            "| storage | head | clients | seconds | pushes accepted | failed | pushes/s | rounds closed |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &reports {
            md += &format!(
                "| {} | {} ({} params) | {} | {:.1} | {} | {} | {:.0} | {} |\n",
                r["storage"].as_str().unwrap_or(""),
                r["head"].as_str().unwrap_or(""),
                r["num_params"],
                r["clients"],
                r["seconds"].as_f64().unwrap_or(0.0),
                r["accepted_pushes"],
                r["failed_pushes"],
                r["pushes_per_second"].as_f64().unwrap_or(0.0),
                r["rounds_closed"],
            );
        }
        std::fs::write(path, md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let failed: u64 = reports
        .iter()
        .filter_map(|r| r["failed_pushes"].as_u64())
        .sum();
    if failed > 0 {
        return Err(format!("{failed} pushes failed during the run"));
    }
    Ok(())
}

/// One measured run against one database.
async fn measure(args: &BenchArgs, storage: &str, url: &str) -> Result<serde_json::Value, String> {
    let db = crate::db::connect(url, 8).await?;
    let policy = Policy {
        body_limit: 16 << 20,
        // Rounds count clients: at most every client.
        round_updates: args.round_updates.clamp(1, args.clients.max(1) as u64),
        round_seconds: 3600.0,
        aggregator: AggregatorName::Mean,
        trim_fraction: 0.1,
        clip_norm: 10.0,
        max_update_norm: 100.0,
        noise_std: 0.0,
        // The bench's clients never pull, so their base grows old as rounds close.
        max_staleness: u64::MAX / 2,
        max_examples_per_update: 1_000_000,
        fedavg_weight_cap: 1000,
        // The bench measures throughput: no client is held back, and no quota fills.
        client_pushes_per_minute: u64::MAX,
        max_pending_bytes: u64::MAX,
        client_pending_updates: u64::MAX,
        delta_retention_rounds: 0,
    };
    let model = format!("bench-{}", crate::now_ms());
    let config = HeadConfig::new(DIM, &[HIDDEN]);
    let head = Head::init(&config, 1).map_err(|e| e.to_string())?;
    let weights = store::to_bytes(&Weights::new(head)).map_err(|e| e.to_string())?;
    crate::models::put(&db, &model, &weights)
        .await
        .map_err(|e| e.message)?;
    let mut client_tokens = Vec::new();
    for i in 0..args.clients {
        client_tokens.push(crate::tokens::create(&db, &format!("bench-{i}"), false, &[]).await?);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::run(
        listener,
        db.clone(),
        policy,
        crate::config::Timeouts::default(),
        None,
        async move {
            let _ = server_stopped.await;
        },
    ));

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (i, token) in client_tokens.into_iter().enumerate() {
        let bodies = bodies(&config, i)?;
        let (measuring, stop, accepted, failed) = (
            measuring.clone(),
            stop.clone(),
            accepted.clone(),
            failed.clone(),
        );
        let (base_url, model) = (base_url.clone(), model.clone());
        threads.push(std::thread::spawn(move || {
            let mut transport = UreqTransport::new(&base_url, Duration::from_secs(30));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let request = HttpRequest {
                    method: "POST",
                    path: protocol::updates_path(&model),
                    headers: vec![
                        ("Authorization".into(), format!("Bearer {token}")),
                        (protocol::IDEMPOTENCY_KEY.into(), format!("bench-{i}-{n}")),
                    ],
                    body: bodies[n % bodies.len()].clone(),
                };
                n += 1;
                let ok = matches!(transport.send(&request), Ok(r) if r.status == 202);
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up: connections, caches
    let rounds_before = crate::models::meta(&db, &model)
        .await
        .map_err(|e| e.message)?
        .rounds;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let rounds = crate::models::meta(&db, &model)
        .await
        .map_err(|e| e.message)?
        .rounds
        - rounds_before;
    let _ = stop_server.send(());
    let _ = server.await;
    let accepted = accepted.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "storage": storage,
        "head": format!("{DIM}->{HIDDEN}->1"),
        "num_params": config.num_params(),
        "clients": args.clients,
        "seconds": elapsed,
        "accepted_pushes": accepted,
        "failed_pushes": failed,
        "pushes_per_second": accepted as f64 / elapsed,
        "rounds_closed": rounds,
        "round_updates": args.round_updates,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }))
}

/// Small random deltas (norm well under the bounds), encoded once.
fn bodies(config: &HeadConfig, client: usize) -> Result<Vec<Vec<u8>>, String> {
    (0..BODIES_PER_CLIENT)
        .map(|j| {
            let noise = Head::init(config, 1000 + (client * BODIES_PER_CLIENT + j) as u64)
                .map_err(|e| e.to_string())?;
            let values: Vec<f32> = noise.to_flat().iter().map(|v| v * 1e-3).collect();
            Delta {
                config: config.clone(),
                values,
                base_version: 1,
                n_examples: 1 + j as u64,
                objective: ObjectiveKind::parse("ips").map_err(|e| e.to_string())?,
            }
            .to_bytes()
            .map_err(|e| e.to_string())
        })
        .collect()
}
