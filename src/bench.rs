//! `tacit bench`: scoring throughput and the time of one training call on every backend of
//! this machine, run back to back so that the figures compare as ratios.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::backend::Device;
use crate::error::Result;
use crate::feedback::Examples;
use crate::head::{Head, HeadConfig};
use crate::objective::{ObjectiveConfig, ObjectiveKind};
use crate::rng::Rng;
use crate::trainer::{train_on, TrainConfig, TrainRequest};

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub task: String,
    pub backend: String,
    /// Median wall time over the repeats, in milliseconds.
    pub median_ms: f64,
    /// Embeddings per second (scoring) or optimizer steps per second (training).
    pub per_second: f64,
    pub submissions_per_call: Option<u64>,
    pub readbacks_per_call: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn counters(device: &Device) -> Option<(u64, u64)> {
    match device {
        Device::Cpu => None,
        Device::Gpu(ctx) => Some((
            ctx.counters.submissions.load(Ordering::SeqCst),
            ctx.counters.readbacks.load(Ordering::SeqCst),
        )),
    }
}

/// Times `f` `repeats` times after one warm-up call; returns the median and per-call counts.
fn time(
    device: &Device,
    repeats: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, Option<(u64, u64)>)> {
    f()?;
    let mut times = Vec::with_capacity(repeats);
    let before = counters(device);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let per_call = before
        .zip(counters(device))
        .map(|(b, a)| ((a.0 - b.0) / repeats as u64, (a.1 - b.1) / repeats as u64));
    Ok((median(times), per_call))
}

/// The standard workload: a 384→128→1 head, scoring n = 1, 64, 1 000, 10 000 embeddings, and
/// one training call of 100 AdamW steps at batch 256 (`ips`).
pub fn run(devices: &[Device], repeats: usize) -> Result<Vec<Figure>> {
    let dim = 384;
    let head = Head::init(&HeadConfig::new(dim, &[128]), 1)?;
    let mut rng = Rng::new(7);
    let mut figures = Vec::new();
    for &n in &[1usize, 64, 1000, 10_000] {
        let x = ndarray::Array2::from_shape_fn((n, dim), |_| (rng.normal() * 0.05) as f32);
        for device in devices {
            let (ms, per_call) = time(device, repeats, || {
                device.score(&head, x.view()).map(|_| ())
            })?;
            figures.push(Figure {
                task: format!("score n={n}"),
                backend: device.name().into(),
                median_ms: ms,
                per_second: n as f64 / (ms / 1e3),
                submissions_per_call: per_call.map(|c| c.0),
                readbacks_per_call: per_call.map(|c| c.1),
            });
        }
    }
    let (steps, batch) = (100, 256);
    let n = steps * batch;
    let emb = ndarray::Array2::from_shape_fn((n, dim), |_| (rng.normal() * 0.05) as f32);
    let observed: Vec<f32> = (0..n).map(|_| rng.bernoulli(0.3) as u8 as f32).collect();
    let mut ex = Examples::implicit_only(emb, observed);
    ex.feedback = (0..n)
        .map(|i| {
            if ex.observed[i] > 0.0 {
                1.0
            } else {
                rng.bernoulli(0.2) as u8 as f32
            }
        })
        .collect();
    ex.propensity = (0..n).map(|_| (0.2 + 0.7 * rng.uniform()) as f32).collect();
    let objective = ObjectiveConfig::new(ObjectiveKind::Ips);
    let config = TrainConfig {
        epochs: 1,
        batch_size: batch,
        ..TrainConfig::default()
    };
    for device in devices {
        let (ms, per_call) = time(device, repeats.min(3), || {
            let request = TrainRequest::new(&head, &objective, &ex, &config);
            train_on(device, &request, &mut |_| ControlFlow::Continue(())).map(|_| ())
        })?;
        figures.push(Figure {
            task: format!("train {steps} steps × batch {batch}"),
            backend: device.name().into(),
            median_ms: ms,
            per_second: steps as f64 / (ms / 1e3),
            submissions_per_call: per_call.map(|c| c.0),
            readbacks_per_call: per_call.map(|c| c.1),
        });
    }
    Ok(figures)
}

/// A markdown table with the GPU/CPU time ratio per task.
pub fn markdown(figures: &[Figure], adapter: &str) -> String {
    let mut out = format!("Adapter: {adapter}\n\n| task | backend | median ms | throughput | submissions / call | readbacks / call | time vs cpu |\n|---|---|---|---|---|---|---|\n");
    for f in figures {
        let cpu = figures
            .iter()
            .find(|g| g.task == f.task && g.backend == "cpu")
            .map(|g| g.median_ms);
        let unit = if f.task.starts_with("score") {
            "emb/s"
        } else {
            "steps/s"
        };
        let opt = |v: Option<u64>| v.map_or("—".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} {unit} | {} | {} | {} |\n",
            f.task,
            f.backend,
            f.median_ms,
            f.per_second,
            opt(f.submissions_per_call),
            opt(f.readbacks_per_call),
            cpu.map_or("—".into(), |c| format!("{:.2}×", f.median_ms / c))
        ));
    }
    out
}
