//! The WGSL kernels (one file each in `shaders/`) and their binding layouts.

/// How a kernel binds one resource.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Binding {
    Uniform,
    Read,
    ReadWrite,
}

impl Binding {
    pub fn ty(self) -> wgpu::BindingType {
        match self {
            Binding::Uniform => wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            Binding::Read => wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: true },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            Binding::ReadWrite => wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: false },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Gather,
    LinearForward,
    LinearBackwardInput,
    LinearBackwardWeights,
    AdamW,
    StepEnd,
    LossBce,
    LossStrata,
    LossPairwise,
    LossBeta,
}

const LOGISTIC: &str = include_str!("../../../shaders/logistic.wgsl");
const SPECIAL: &str = include_str!("../../../shaders/special.wgsl");

use Binding::{Read as R, ReadWrite as W, Uniform as U};

/// The loss kernels share one layout (declared in `shaders/logistic.wgsl`).
const LOSS_BINDINGS: &[Binding] = &[U, R, R, R, R, R, R, W, W];

impl Kernel {
    #[cfg(test)]
    pub const ALL: [Kernel; 10] = [
        Kernel::Gather,
        Kernel::LinearForward,
        Kernel::LinearBackwardInput,
        Kernel::LinearBackwardWeights,
        Kernel::AdamW,
        Kernel::StepEnd,
        Kernel::LossBce,
        Kernel::LossStrata,
        Kernel::LossPairwise,
        Kernel::LossBeta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Gather => "gather_rows",
            Kernel::LinearForward => "linear_forward",
            Kernel::LinearBackwardInput => "linear_backward_input",
            Kernel::LinearBackwardWeights => "linear_backward_weights",
            Kernel::AdamW => "adamw",
            Kernel::StepEnd => "step_end",
            Kernel::LossBce => "loss_bce",
            Kernel::LossStrata => "loss_strata",
            Kernel::LossPairwise => "loss_pairwise",
            Kernel::LossBeta => "loss_beta",
        }
    }

    /// The WGSL source, with the shared libraries prepended where the kernel needs them.
    pub fn source(self) -> String {
        let own = match self {
            Kernel::Gather => include_str!("../../../shaders/gather_rows.wgsl"),
            Kernel::LinearForward => include_str!("../../../shaders/linear_forward.wgsl"),
            Kernel::LinearBackwardInput => {
                include_str!("../../../shaders/linear_backward_input.wgsl")
            }
            Kernel::LinearBackwardWeights => {
                include_str!("../../../shaders/linear_backward_weights.wgsl")
            }
            Kernel::AdamW => include_str!("../../../shaders/adamw.wgsl"),
            Kernel::StepEnd => include_str!("../../../shaders/step_end.wgsl"),
            Kernel::LossBce => include_str!("../../../shaders/loss_bce.wgsl"),
            Kernel::LossStrata => include_str!("../../../shaders/loss_strata.wgsl"),
            Kernel::LossPairwise => include_str!("../../../shaders/loss_pairwise.wgsl"),
            Kernel::LossBeta => include_str!("../../../shaders/loss_beta.wgsl"),
        };
        match self {
            Kernel::LossBeta => format!("{LOGISTIC}\n{SPECIAL}\n{own}"),
            Kernel::LossBce | Kernel::LossStrata | Kernel::LossPairwise => {
                format!("{LOGISTIC}\n{own}")
            }
            _ => own.to_string(),
        }
    }

    pub fn bindings(self) -> &'static [Binding] {
        match self {
            Kernel::Gather => &[U, R, R, R, R, W],
            Kernel::LinearForward => &[U, R, R, R, R, W, W],
            Kernel::LinearBackwardInput => &[U, R, R, R, R, R, W],
            Kernel::LinearBackwardWeights => &[U, R, R, R, R, W],
            Kernel::AdamW => &[U, R, R, R, W, W, W],
            Kernel::StepEnd => &[U, W],
            _ => LOSS_BINDINGS,
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// Every kernel parses and validates with naga (the browser compiles the same WGSL, so a
    /// shader error must surface natively first).
    #[test]
    fn every_kernel_validates() {
        for k in Kernel::ALL {
            let module = naga::front::wgsl::parse_str(&k.source())
                .unwrap_or_else(|e| panic!("{}: {}", k.name(), e.emit_to_string(&k.source())));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", k.name()));
            // Within WebGPU's default of 8 storage buffers per stage (plus one uniform).
            let storage = k
                .bindings()
                .iter()
                .filter(|b| !matches!(b, Binding::Uniform))
                .count();
            assert!(storage <= 8, "{}: {storage} storage buffers", k.name());
        }
    }
}
