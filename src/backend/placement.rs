//! The device for each call (DESIGN §11). A chat turn scores a handful of candidates: that
//! is microseconds of arithmetic on the CPU path and one submit + readback round trip on a
//! GPU (≈0.5 ms in Chrome at best, tens of ms on a software adapter, ≈100 ms in Firefox).
//! So a model that holds a GPU scores small batches on the CPU path, with the same numbers
//! (the conformance suite checks both against one float64 reference), and large ones on the
//! GPU. The crossover comes from a measurement of both devices on the model's own head
//! ([`Calibration`]); a software adapter never serves a latency-bound call.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::Device;
use crate::error::Result;
use crate::head::Head;

/// How a model with a GPU places its scoring calls.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Placement {
    /// Every call on the model's device (an app that forced `cpu` or `webgpu`).
    #[default]
    Fixed,
    /// Per call: batches of at most `cpu_up_to_rows` rows on the CPU path, larger ones on
    /// the GPU; everything on the CPU path when the GPU is a software adapter.
    Auto {
        cpu_up_to_rows: usize,
        software_adapter: bool,
    },
}

/// Which device served a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServedOn {
    Cpu,
    Gpu,
}

/// Why that device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServedBecause {
    /// The model has one device (no GPU, or the app forced one).
    OnlyDevice,
    /// At most the measured crossover: the CPU path answers before a GPU round trip would.
    SmallBatch,
    /// Above the crossover: the GPU's throughput pays for its round trip.
    LargeBatch,
    /// The GPU is a software adapter (SwiftShader, llvmpipe, lavapipe): slower than the CPU
    /// path for latency-bound work.
    SoftwareAdapter,
    /// The GPU was lost during the call; the CPU path finished it.
    DeviceLost,
}

impl ServedBecause {
    /// The name apps see (`stats().lastScore.reason`); the serde form is the same.
    pub fn name(self) -> &'static str {
        match self {
            ServedBecause::OnlyDevice => "only-device",
            ServedBecause::SmallBatch => "small-batch",
            ServedBecause::LargeBatch => "large-batch",
            ServedBecause::SoftwareAdapter => "software-adapter",
            ServedBecause::DeviceLost => "device-lost",
        }
    }
}

/// What `stats()` reports of the last scoring call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    pub device: ServedOn,
    pub reason: ServedBecause,
    pub rows: usize,
}

impl Placement {
    /// The device for a scoring call of `rows` rows on a model that holds `device`.
    pub fn for_scoring(&self, device: &Device, rows: usize) -> (Device, Served) {
        let served = |on, reason| Served {
            device: on,
            reason,
            rows,
        };
        match (self, device) {
            (_, Device::Cpu) | (Placement::Fixed, _) => {
                let on = match device {
                    Device::Cpu => ServedOn::Cpu,
                    Device::Gpu(_) => ServedOn::Gpu,
                };
                (device.clone(), served(on, ServedBecause::OnlyDevice))
            }
            (
                Placement::Auto {
                    software_adapter: true,
                    ..
                },
                _,
            ) => (
                Device::Cpu,
                served(ServedOn::Cpu, ServedBecause::SoftwareAdapter),
            ),
            (Placement::Auto { cpu_up_to_rows, .. }, _) if rows <= *cpu_up_to_rows => (
                Device::Cpu,
                served(ServedOn::Cpu, ServedBecause::SmallBatch),
            ),
            (Placement::Auto { .. }, _) => (
                device.clone(),
                served(ServedOn::Gpu, ServedBecause::LargeBatch),
            ),
        }
    }
}

/// Scoring times measured on both devices at two batch sizes, in milliseconds: each device
/// as a fixed cost plus a cost per row, and the crossover where they meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub small_rows: usize,
    pub large_rows: usize,
    pub cpu_ms: (f64, f64),
    pub gpu_ms: (f64, f64),
}

/// The crossover is never set above this many rows: past it the estimate extrapolates far
/// beyond what was measured.
pub const MAX_CPU_ROWS: usize = 1 << 16;

impl Calibration {
    /// The largest batch the CPU path should serve: the row count where the two measured
    /// lines cross (all of them up to [`MAX_CPU_ROWS`] if the GPU never catches up; none if
    /// it is faster even for the small batch). Timer noise can make a slope negative; it is
    /// read as zero.
    pub fn cpu_up_to_rows(&self) -> usize {
        let line = |(small, large): (f64, f64)| {
            let span = (self.large_rows - self.small_rows).max(1) as f64;
            let per_row = ((large - small) / span).max(0.0);
            let fixed = (small - per_row * self.small_rows as f64).max(0.0);
            (fixed, per_row)
        };
        let (cpu_fixed, cpu_row) = line(self.cpu_ms);
        let (gpu_fixed, gpu_row) = line(self.gpu_ms);
        if self.gpu_ms.0 <= self.cpu_ms.0 {
            return 0;
        }
        if cpu_row <= gpu_row {
            return MAX_CPU_ROWS;
        }
        let cross = (gpu_fixed - cpu_fixed) / (cpu_row - gpu_row);
        if cross.is_finite() && cross > 0.0 {
            (cross.floor() as usize).min(MAX_CPU_ROWS)
        } else {
            0
        }
    }
}

/// Batch sizes [`calibrate`] measures: a chat turn's few candidates, and a batch large
/// enough that per-row costs dominate.
pub const CALIBRATION_ROWS: (usize, usize) = (8, 256);

/// Measures scoring `head` on the CPU path and on `device` (a GPU) at
/// [`CALIBRATION_ROWS`]: the best of three timed runs each, after one untimed run that
/// compiles the GPU's pipelines and allocates its buffers. `now_ms` is the host's clock
/// (`performance.now()` in a browser). Costs a few dozen scoring calls, once per adapter
/// and head shape (hosts cache it).
pub async fn calibrate(
    device: &Device,
    head: &Head,
    now_ms: &impl Fn() -> f64,
) -> Result<Calibration> {
    let (small, large) = CALIBRATION_ROWS;
    let dim = head.config.dim;
    // Deterministic, varied inputs: timing must not depend on a random draw.
    let x = Array2::from_shape_fn((large, dim), |(i, j)| {
        ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5
    });
    let best = |on: &Device, rows: usize| {
        let view = x.slice(ndarray::s![..rows, ..]);
        let on = on.clone();
        async move {
            on.score_async(head, view).await?;
            let mut fastest = f64::INFINITY;
            for _ in 0..3 {
                let t0 = now_ms();
                on.score_async(head, view).await?;
                fastest = fastest.min(now_ms() - t0);
            }
            Ok::<f64, crate::error::Error>(fastest.max(0.0))
        }
    };
    Ok(Calibration {
        small_rows: small,
        large_rows: large,
        cpu_ms: (
            best(&Device::Cpu, small).await?,
            best(&Device::Cpu, large).await?,
        ),
        gpu_ms: (best(device, small).await?, best(device, large).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crossover_is_where_the_measured_lines_meet() {
        // CPU 0.01 + 0.1 ms/row, GPU 2 + 0.001 ms/row: they meet at (2 - 0.01) / 0.099 rows.
        let c = Calibration {
            small_rows: 8,
            large_rows: 128,
            cpu_ms: (0.01 + 0.8, 0.01 + 12.8),
            gpu_ms: (2.0 + 0.008, 2.0 + 0.128),
        };
        assert_eq!(c.cpu_up_to_rows(), 20, "(2 - 0.01) / 0.099 = 20.1");
        // A GPU that is faster even for 8 rows serves everything.
        let fast = Calibration {
            gpu_ms: (0.5, 0.6),
            cpu_ms: (0.8, 12.8),
            ..c
        };
        assert_eq!(fast.cpu_up_to_rows(), 0);
        // A GPU whose cost per row is no better never catches up.
        let slow = Calibration {
            gpu_ms: (30.0, 60.0),
            ..c
        };
        assert_eq!(slow.cpu_up_to_rows(), MAX_CPU_ROWS);
        // Noise that makes the CPU's large batch faster than its small one.
        let noisy = Calibration {
            cpu_ms: (0.9, 0.7),
            ..c
        };
        assert_eq!(noisy.cpu_up_to_rows(), MAX_CPU_ROWS);
    }

    #[test]
    fn reason_names_are_the_serde_names() {
        use ServedBecause::*;
        for r in [
            OnlyDevice,
            SmallBatch,
            LargeBatch,
            SoftwareAdapter,
            DeviceLost,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name(), "{r:?}");
        }
    }

    #[test]
    fn each_call_goes_where_the_placement_says() {
        let auto = Placement::Auto {
            cpu_up_to_rows: 16,
            software_adapter: false,
        };
        let (d, s) = auto.for_scoring(&Device::Cpu, 1000);
        assert!(matches!(d, Device::Cpu));
        assert_eq!(
            (s.device, s.reason),
            (ServedOn::Cpu, ServedBecause::OnlyDevice)
        );
        let (_, s) = Placement::Fixed.for_scoring(&Device::Cpu, 4);
        assert_eq!(
            (s.device, s.reason, s.rows),
            (ServedOn::Cpu, ServedBecause::OnlyDevice, 4)
        );
    }
}
