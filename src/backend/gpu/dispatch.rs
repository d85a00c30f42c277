//! Kernel dispatches, built by one op constructor per kernel that checks every bound buffer
//! against the extent its uniform and row capacity imply (as web-rwkv's `TensorOp`
//! constructors do): a plan that would read or write past a buffer fails with a typed
//! [`DispatchError`] when it is built, instead of recording an out-of-bounds dispatch. The
//! pipeline is resolved here, once per dispatch built, so recording takes no lock.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::Error;

use super::context::{GpuContext, Pipeline};
use super::kernels::{Kernel, PipelineKey};
use super::uniforms::{
    AdamWParams, AddOffsetParams, GatherParams, LinearBackwardInputParams,
    LinearBackwardWeightsParams, LinearForwardParams, LossParams, StepEndParams, Uniform,
};

/// Workgroup grid for `n` invocations of a `workgroup`-wide kernel, within the 65 535 limit
/// per axis (the kernels flatten it with `flat_index`, `shaders/workgroup.wgsl`).
pub(crate) fn grid(n: usize, workgroup: u32) -> (u32, u32) {
    let groups = u32::try_from(n.div_ceil(workgroup as usize))
        .unwrap_or(u32::MAX)
        .max(1);
    let x = groups.min(65_535);
    (x, groups.div_ceil(x))
}

/// Why a dispatch could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DispatchError {
    /// The op bound another number of resources than the kernel's layout declares.
    Bindings {
        kernel: &'static str,
        declared: usize,
        bound: usize,
    },
    /// The uniform is not the struct the kernel's WGSL binds.
    Uniform {
        kernel: &'static str,
        given: &'static str,
    },
    /// A buffer is smaller than the extent the dispatch's shape implies.
    TooSmall {
        kernel: &'static str,
        binding: usize,
        needed_bytes: u64,
        size_bytes: u64,
    },
}

impl std::fmt::Display for DispatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DispatchError::Bindings {
                kernel,
                declared,
                bound,
            } => write!(f, "{kernel}: {bound} resources bound, {declared} declared"),
            DispatchError::Uniform { kernel, given } => {
                write!(f, "{kernel}: given the uniform {given}, which it does not bind")
            }
            DispatchError::TooSmall {
                kernel,
                binding,
                needed_bytes,
                size_bytes,
            } => write!(
                f,
                "{kernel}: binding {binding} holds {size_bytes} bytes, its shape needs {needed_bytes}"
            ),
        }
    }
}

impl From<DispatchError> for Error {
    fn from(e: DispatchError) -> Self {
        Error::InvalidData(format!("GPU plan: {e}"))
    }
}

/// Bytes of `n` 4-byte words (saturating: an absurd shape fails the check, never wraps).
fn words(n: u64) -> u64 {
    n.saturating_mul(4)
}

/// `a·b + c` words, saturating.
fn extent(a: u32, b: u32, c: u32) -> u64 {
    words((a as u64).saturating_mul(b as u64).saturating_add(c as u64))
}

/// Rows (at most `rows`) of `width` words starting at word `offset`.
fn rows_of(rows: usize, width: u32, offset: u32) -> u64 {
    words(
        (rows as u64)
            .saturating_mul(width as u64)
            .saturating_add(offset as u64),
    )
}

/// Fails on the first binding whose `(size, needed)` bytes do not fit (binding numbers start
/// at 1: binding 0 is the uniform).
pub(crate) fn check_sizes(kernel: Kernel, sizes: &[(u64, u64)]) -> Result<(), DispatchError> {
    match sizes.iter().position(|&(size, needed)| size < needed) {
        Some(i) => Err(DispatchError::TooSmall {
            kernel: kernel.name(),
            binding: i + 1,
            needed_bytes: sizes[i].1,
            size_bytes: sizes[i].0,
        }),
        None => Ok(()),
    }
}

/// The step table of a plan (`shaders/step_table.wgsl`) and the most rows one step holds, which
/// sizes every per-batch buffer.
#[derive(Clone, Copy)]
pub(crate) struct StepTable<'a> {
    pub steps: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
    pub max_rows: usize,
}

impl StepTable<'_> {
    /// At least one step and `state[0..2]`.
    fn args(&self) -> [(&wgpu::Buffer, u64); 2] {
        [(self.steps, words(4)), (self.state, words(2))]
    }
}

/// The buffers every loss kernel binds after the step table (`shaders/logistic.wgsl`).
#[derive(Clone, Copy)]
pub(crate) struct LossBuffers<'a> {
    pub batch_rows: &'a wgpu::Buffer,
    pub row_data: &'a wgpu::Buffer,
    pub outputs: &'a wgpu::Buffer,
    pub pairs: &'a wgpu::Buffer,
    pub d_out: &'a wgpu::Buffer,
    pub loss_acc: &'a wgpu::Buffer,
}

/// A kernel dispatch ready to record: pipeline, bind group and grid.
#[derive(Clone)]
pub(crate) struct Dispatch {
    pipeline: Arc<Pipeline>,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
}

impl Dispatch {
    /// Checks the uniform's type and `args` (buffer, bytes its shape needs) against the
    /// kernel's layout, uploads the uniform and binds it at 0 and `args` from 1.
    fn build<U: Uniform>(
        ctx: &GpuContext,
        kernel: Kernel,
        params: &U,
        args: &[(&wgpu::Buffer, u64)],
        threads: usize,
    ) -> Result<Self, DispatchError> {
        if *kernel.uniform_layout() != U::LAYOUT {
            return Err(DispatchError::Uniform {
                kernel: kernel.name(),
                given: std::any::type_name::<U>(),
            });
        }
        let declared = kernel.bindings().len();
        if args.len() + 1 != declared {
            return Err(DispatchError::Bindings {
                kernel: kernel.name(),
                declared,
                bound: args.len() + 1,
            });
        }
        let sizes: Vec<(u64, u64)> = args.iter().map(|(b, n)| (b.size(), *n)).collect();
        check_sizes(kernel, &sizes)?;
        let key = PipelineKey::new(kernel);
        let pipeline = ctx.pipeline(key);
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(kernel.name()),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(&uniform)
            .chain(args.iter().map(|(b, _)| *b))
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: &pipeline.layout,
            entries: &entries,
        });
        let grid = match key.workgroup_size {
            Some(w) if !kernel.is_loss() => grid(threads, w),
            _ => (1, 1),
        };
        Ok(Dispatch {
            pipeline,
            bind_group,
            grid,
        })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }

    /// `dest[r, :] = source[batch_rows[r], :]` for the batch's rows; `source` holds
    /// `source_rows` rows.
    pub fn gather(
        ctx: &GpuContext,
        p: GatherParams,
        table: StepTable,
        batch_rows: &wgpu::Buffer,
        source: (&wgpu::Buffer, usize),
        dest: &wgpu::Buffer,
    ) -> Result<Self, DispatchError> {
        let [steps, state] = table.args();
        Self::build(
            ctx,
            Kernel::Gather,
            &p,
            &[
                steps,
                state,
                // Sized per epoch and checked when the epoch is uploaded.
                (batch_rows, 0),
                (source.0, rows_of(source.1, p.width, 0)),
                (dest, rows_of(table.max_rows, p.width, 0)),
            ],
            table.max_rows.saturating_mul(p.width as usize),
        )
    }

    /// `outputs[r·stride] += offsets[batch_rows[r]]` for the batch's rows; `offsets` holds
    /// `offset_rows` values.
    pub fn add_offset(
        ctx: &GpuContext,
        p: AddOffsetParams,
        table: StepTable,
        batch_rows: &wgpu::Buffer,
        offsets: (&wgpu::Buffer, usize),
        outputs: &wgpu::Buffer,
    ) -> Result<Self, DispatchError> {
        let [steps, state] = table.args();
        Self::build(
            ctx,
            Kernel::AddOffset,
            &p,
            &[
                steps,
                state,
                // Sized per epoch and checked when the epoch is uploaded.
                (batch_rows, 0),
                (offsets.0, rows_of(offsets.1, 1, 0)),
                (outputs, rows_of(table.max_rows, p.stride, 0)),
            ],
            table.max_rows,
        )
    }

    /// One layer's forward pass into `pre` / `post`.
    pub fn linear_forward(
        ctx: &GpuContext,
        p: LinearForwardParams,
        table: StepTable,
        input: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        pre: &wgpu::Buffer,
        post: &wgpu::Buffer,
    ) -> Result<Self, DispatchError> {
        let [steps, state] = table.args();
        let out = rows_of(table.max_rows, p.out_dim, p.out_offset);
        Self::build(
            ctx,
            Kernel::LinearForward,
            &p,
            &[
                steps,
                state,
                (input, rows_of(table.max_rows, p.in_dim, 0)),
                (
                    weights,
                    layer_extent(p.in_dim, p.out_dim, p.w_offset, p.b_offset),
                ),
                (pre, out),
                (post, out),
            ],
            // A tile of up to four rows × four outputs per invocation (see linear_forward.wgsl).
            table
                .max_rows
                .div_ceil(4)
                .saturating_mul((p.out_dim as usize).div_ceil(4)),
        )
    }

    /// One layer's weight and bias gradients over the batch.
    pub fn linear_backward_weights(
        ctx: &GpuContext,
        p: LinearBackwardWeightsParams,
        table: StepTable,
        delta: &wgpu::Buffer,
        input: &wgpu::Buffer,
        grads: &wgpu::Buffer,
    ) -> Result<Self, DispatchError> {
        let [steps, state] = table.args();
        Self::build(
            ctx,
            Kernel::LinearBackwardWeights,
            &p,
            &[
                steps,
                state,
                (delta, rows_of(table.max_rows, p.out_dim, p.delta_offset)),
                (input, rows_of(table.max_rows, p.in_dim, 0)),
                (
                    grads,
                    layer_extent(p.in_dim, p.out_dim, p.w_offset, p.b_offset),
                ),
            ],
            // A tile of up to four outputs × four columns per invocation (see
            // linear_backward_weights.wgsl).
            (p.out_dim as usize)
                .div_ceil(4)
                .saturating_mul((p.in_dim as usize + 1).div_ceil(4)),
        )
    }

    /// One layer's input gradient through the activation of the layer below.
    pub fn linear_backward_input(
        ctx: &GpuContext,
        p: LinearBackwardInputParams,
        table: StepTable,
        delta: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        pre_prev: &wgpu::Buffer,
        d_in: &wgpu::Buffer,
    ) -> Result<Self, DispatchError> {
        let [steps, state] = table.args();
        let below = rows_of(table.max_rows, p.in_dim, 0);
        Self::build(
            ctx,
            Kernel::LinearBackwardInput,
            &p,
            &[
                steps,
                state,
                (delta, rows_of(table.max_rows, p.out_dim, p.delta_offset)),
                (weights, extent(p.in_dim, p.out_dim, p.w_offset)),
                (pre_prev, below),
                (d_in, below),
            ],
            table.max_rows.saturating_mul(p.in_dim as usize),
        )
    }

    /// AdamW over the `p.count` parameters (state holds the step count).
    pub fn adamw(
        ctx: &GpuContext,
        p: AdamWParams,
        state: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        decay_mask: &wgpu::Buffer,
        [weights, m, v]: [&wgpu::Buffer; 3],
    ) -> Result<Self, DispatchError> {
        let n = words(p.count as u64);
        Self::build(
            ctx,
            Kernel::AdamW,
            &p,
            &[
                (state, words(2)),
                (grads, n),
                (decay_mask, n),
                (weights, n),
                (m, n),
                (v, n),
            ],
            p.count as usize,
        )
    }

    /// Advances the step table to the next batch.
    pub fn step_end(
        ctx: &GpuContext,
        p: StepEndParams,
        state: &wgpu::Buffer,
    ) -> Result<Self, DispatchError> {
        Self::build(ctx, Kernel::StepEnd, &p, &[(state, words(2))], 1)
    }

    /// A loss kernel over the batch's `head_outputs` outputs per row (and, for `loss_strata`,
    /// the exposure logits at `p.aux_offset`).
    pub fn loss(
        ctx: &GpuContext,
        kernel: Kernel,
        p: LossParams,
        head_outputs: usize,
        table: StepTable,
        b: LossBuffers,
    ) -> Result<Self, DispatchError> {
        let [steps, state] = table.args();
        let rows = table.max_rows;
        let heads = rows_of(rows, head_outputs as u32, 0);
        let outputs = match kernel {
            Kernel::LossStrata => heads.max(rows_of(rows, 1, p.aux_offset)),
            _ => heads,
        };
        Self::build(
            ctx,
            kernel,
            &p,
            &[
                steps,
                state,
                // Sized per epoch and checked when the epoch is uploaded.
                (b.batch_rows, 0),
                (b.row_data, words(4)),
                (b.outputs, outputs),
                (b.pairs, 0),
                (b.d_out, outputs),
                (b.loss_acc, words(3)),
            ],
            1,
        )
    }
}

/// Words of a layer's weight `[out, in]` at `w_offset` and bias `[out]` at `b_offset`.
fn layer_extent(in_dim: u32, out_dim: u32, w_offset: u32, b_offset: u32) -> u64 {
    extent(in_dim, out_dim, w_offset).max(extent(1, out_dim, b_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_invocation_within_the_axis_limit() {
        assert_eq!(grid(0, 256), (1, 1));
        assert_eq!(grid(256, 256), (1, 1));
        assert_eq!(grid(257, 256), (2, 1));
        // 65 536 workgroups: two rows of 65 535 (the second mostly idle).
        assert_eq!(grid(65_536 * 256, 256), (65_535, 2));
        assert_eq!(grid(1000, 64), (16, 1));
    }

    #[test]
    fn extents_are_the_words_a_shape_touches() {
        // A 3 → 2 layer at word 10: weights 10..16, bias 16..18.
        assert_eq!(layer_extent(3, 2, 10, 16), 18 * 4);
        // 5 rows of 2 after 7 words of another head.
        assert_eq!(rows_of(5, 2, 7), 17 * 4);
        // Saturates instead of wrapping.
        assert_eq!(extent(u32::MAX, u32::MAX, u32::MAX), words(u64::MAX));
    }

    #[test]
    fn a_buffer_smaller_than_its_shape_is_refused() {
        assert_eq!(
            check_sizes(Kernel::LinearForward, &[(16, 16), (64, 64), (68, 72)]),
            Err(DispatchError::TooSmall {
                kernel: "linear_forward",
                binding: 3,
                needed_bytes: 72,
                size_bytes: 68,
            })
        );
        assert_eq!(check_sizes(Kernel::AdamW, &[(16, 8), (400, 400)]), Ok(()));
        let e: Error = DispatchError::TooSmall {
            kernel: "adamw",
            binding: 2,
            needed_bytes: 8,
            size_bytes: 4,
        }
        .into();
        assert_eq!(e.code(), crate::error::ErrorCode::InvalidData);
    }
}
