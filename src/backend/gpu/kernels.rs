//! The WGSL kernels (one file each in `shaders/`) and their binding layouts.

use super::uniforms::{
    AdamWParams, AddOffsetParams, GatherParams, Layout, LinearBackwardInputParams,
    LinearBackwardWeightsParams, LinearForwardParams, LossParams, StepEndParams, Uniform,
};

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
    AddOffset,
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

/// Workgroup size of every kernel but `step_end`: the value of the `WORKGROUP_SIZE` override
/// (`shaders/workgroup.wgsl`) each pipeline is compiled with, and a part of its cache key. A
/// power of two (the loss kernels' tree reduction halves it).
pub(crate) const WORKGROUP_SIZE: u32 = 256;
const _: () = assert!(WORKGROUP_SIZE.is_power_of_two());

// Shared WGSL prepended to the kernels that use it (WGSL has no includes).
const WORKGROUP: &str = include_str!("../../../shaders/workgroup.wgsl");
const STEP_TABLE: &str = include_str!("../../../shaders/step_table.wgsl");
const LOGISTIC: &str = include_str!("../../../shaders/logistic.wgsl");
const SPECIAL: &str = include_str!("../../../shaders/special.wgsl");
const TILE: &str = include_str!("../../../shaders/tile.wgsl");

use Binding::{Read as R, ReadWrite as W, Uniform as U};

/// The loss kernels share one layout (declared in `shaders/logistic.wgsl`).
const LOSS_BINDINGS: &[Binding] = &[U, R, R, R, R, R, R, W, W];

impl Kernel {
    #[cfg(test)]
    pub const ALL: [Kernel; 11] = [
        Kernel::Gather,
        Kernel::AddOffset,
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
            Kernel::AddOffset => "add_offset",
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

    /// The shared WGSL files the kernel needs, in the order they are prepended.
    fn libraries(self) -> &'static [&'static str] {
        match self {
            Kernel::Gather | Kernel::AddOffset | Kernel::LinearBackwardInput => {
                &[WORKGROUP, STEP_TABLE]
            }
            Kernel::LinearForward | Kernel::LinearBackwardWeights => &[WORKGROUP, STEP_TABLE, TILE],
            Kernel::AdamW => &[WORKGROUP],
            Kernel::StepEnd => &[],
            Kernel::LossBce | Kernel::LossStrata | Kernel::LossPairwise => {
                &[WORKGROUP, STEP_TABLE, LOGISTIC]
            }
            Kernel::LossBeta => &[WORKGROUP, STEP_TABLE, LOGISTIC, SPECIAL],
        }
    }

    /// The WGSL source, with the shared libraries prepended where the kernel needs them.
    pub fn source(self) -> String {
        let own = match self {
            Kernel::Gather => include_str!("../../../shaders/gather_rows.wgsl"),
            Kernel::AddOffset => include_str!("../../../shaders/add_offset.wgsl"),
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
        let mut source = self.libraries().join("\n");
        source.push('\n');
        source.push_str(own);
        source
    }

    pub fn bindings(self) -> &'static [Binding] {
        match self {
            Kernel::Gather | Kernel::AddOffset => &[U, R, R, R, R, W],
            Kernel::LinearForward => &[U, R, R, R, R, W, W],
            Kernel::LinearBackwardInput => &[U, R, R, R, R, R, W],
            Kernel::LinearBackwardWeights => &[U, R, R, R, R, W],
            Kernel::AdamW => &[U, R, R, R, W, W, W],
            Kernel::StepEnd => &[U, W],
            Kernel::LossBce | Kernel::LossStrata | Kernel::LossPairwise | Kernel::LossBeta => {
                LOSS_BINDINGS
            }
        }
    }

    /// The layout of the uniform the kernel binds at `@binding(0)` (checked against the WGSL
    /// by `uniforms::tests`).
    pub fn uniform_layout(self) -> &'static Layout {
        match self {
            Kernel::Gather => &GatherParams::LAYOUT,
            Kernel::AddOffset => &AddOffsetParams::LAYOUT,
            Kernel::LinearForward => &LinearForwardParams::LAYOUT,
            Kernel::LinearBackwardInput => &LinearBackwardInputParams::LAYOUT,
            Kernel::LinearBackwardWeights => &LinearBackwardWeightsParams::LAYOUT,
            Kernel::AdamW => &AdamWParams::LAYOUT,
            Kernel::StepEnd => &StepEndParams::LAYOUT,
            Kernel::LossBce | Kernel::LossStrata | Kernel::LossPairwise | Kernel::LossBeta => {
                &LossParams::LAYOUT
            }
        }
    }

    /// Loss kernels run as one workgroup that loops over the batch; `step_end` as one
    /// invocation; the rest element-wise on a grid.
    pub fn is_loss(self) -> bool {
        match self {
            Kernel::LossBce | Kernel::LossStrata | Kernel::LossPairwise | Kernel::LossBeta => true,
            Kernel::Gather
            | Kernel::AddOffset
            | Kernel::LinearForward
            | Kernel::LinearBackwardInput
            | Kernel::LinearBackwardWeights
            | Kernel::AdamW
            | Kernel::StepEnd => false,
        }
    }

    /// The `WORKGROUP_SIZE` override the kernel is compiled with (`step_end` has a fixed
    /// `@workgroup_size(1)` and no override).
    pub fn workgroup_size(self) -> Option<u32> {
        (self != Kernel::StepEnd).then_some(WORKGROUP_SIZE)
    }
}

/// What a compiled pipeline depends on: the shader, its entry point and the values of its
/// pipeline-overridable constants. The pipeline cache is keyed by it, so a variant of a kernel
/// (another workgroup size) is a pipeline of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: Kernel,
    pub entry_point: &'static str,
    /// The `WORKGROUP_SIZE` override; `None` for a kernel that declares none.
    pub workgroup_size: Option<u32>,
}

impl PipelineKey {
    /// The kernel's `main` with the default constants.
    pub fn new(kernel: Kernel) -> Self {
        PipelineKey {
            kernel,
            entry_point: "main",
            workgroup_size: kernel.workgroup_size(),
        }
    }

    /// The `PipelineCompilationOptions::constants` of the key (WebGPU and wgpu's native
    /// backends both take override values as f64).
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        self.workgroup_size
            .map(|w| ("WORKGROUP_SIZE", w as f64))
            .into_iter()
            .collect()
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
            // The workgroup size is the `WORKGROUP_SIZE` override wherever the key passes one
            // (a constant the module does not declare is a pipeline error).
            let declares = module
                .overrides
                .iter()
                .any(|(_, o)| o.name.as_deref() == Some("WORKGROUP_SIZE"));
            let main = module.entry_points.iter().find(|e| e.name == "main");
            let main = main.unwrap_or_else(|| panic!("{}: no main", k.name()));
            let overridden = main
                .workgroup_size_overrides
                .is_some_and(|o| o[0].is_some());
            let keyed = PipelineKey::new(k).workgroup_size.is_some();
            assert_eq!(declares, keyed, "{}", k.name());
            assert_eq!(overridden, keyed, "{}", k.name());
        }
    }

    #[test]
    fn the_pipeline_key_carries_the_workgroup_size() {
        let key = PipelineKey::new(Kernel::LinearForward);
        assert_eq!(key.entry_point, "main");
        assert_eq!(key.constants(), vec![("WORKGROUP_SIZE", 256.0)]);
        assert!(PipelineKey::new(Kernel::StepEnd).constants().is_empty());
        let narrow = PipelineKey {
            workgroup_size: Some(64),
            ..key
        };
        assert_ne!(narrow, key, "a variant is a pipeline of its own");
    }

    /// The step table is declared once (`shaders/step_table.wgsl`), not in the kernels.
    #[test]
    fn the_step_table_is_declared_once() {
        for k in Kernel::ALL {
            let count = k.source().matches("var<storage, read> steps").count();
            let expected = usize::from(k.libraries().contains(&STEP_TABLE));
            assert_eq!(count, expected, "{}", k.name());
        }
    }
}
