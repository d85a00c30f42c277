//! Buffers, bind groups and dispatches for the head's layers: shared by scoring and training.

use wgpu::util::DeviceExt;

use crate::error::Result;
use crate::head::{Activation, Head};

use super::context::GpuContext;
use super::dispatch::{Dispatch, StepTable};
use super::uniforms::{
    LinearBackwardInputParams, LinearBackwardWeightsParams, LinearForwardParams,
};

/// One linear layer's place in the flat parameter buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerPlan {
    pub in_dim: u32,
    pub out_dim: u32,
    /// Activation applied to this layer's output (0 identity, 1 ReLU, 2 tanh).
    pub activation: u32,
    pub w_offset: u32,
    pub b_offset: u32,
}

impl LayerPlan {
    /// The forward uniform, writing the layer's rows from word `out_offset` of `pre` / `post`.
    pub fn forward(&self, out_offset: u32) -> LinearForwardParams {
        LinearForwardParams {
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            activation: self.activation,
            w_offset: self.w_offset,
            b_offset: self.b_offset,
            out_offset,
            ..Default::default()
        }
    }

    /// The weight-gradient uniform, reading the layer's rows from word `delta_offset` of `delta`.
    pub fn backward_weights(&self, delta_offset: u32) -> LinearBackwardWeightsParams {
        LinearBackwardWeightsParams {
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            w_offset: self.w_offset,
            b_offset: self.b_offset,
            delta_offset,
            ..Default::default()
        }
    }

    /// The input-gradient uniform through `below`'s activation.
    pub fn backward_input(&self, below: &LayerPlan) -> LinearBackwardInputParams {
        LinearBackwardInputParams {
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            activation: below.activation,
            w_offset: self.w_offset,
            delta_offset: 0,
            ..Default::default()
        }
    }
}

/// The layers of `head`, with parameters starting at `base` in the flat buffer.
pub(crate) fn layer_plans(head: &Head, base: usize) -> Vec<LayerPlan> {
    let act = match head.config.activation {
        Activation::Relu => 1,
        Activation::Tanh => 2,
    };
    let shapes = head.config.layer_shapes();
    let mut at = base;
    shapes
        .iter()
        .enumerate()
        .map(|(l, &(i, o))| {
            let p = LayerPlan {
                in_dim: i as u32,
                out_dim: o as u32,
                activation: if l + 1 == shapes.len() { 0 } else { act },
                w_offset: at as u32,
                b_offset: (at + i * o) as u32,
            };
            at += i * o + o;
            p
        })
        .collect()
}

pub(crate) fn storage(
    ctx: &GpuContext,
    label: &str,
    bytes: &[u8],
    extra: wgpu::BufferUsages,
) -> wgpu::Buffer {
    // Bindings may not be empty: pad to 16 bytes.
    let mut padded;
    let contents = if bytes.len() < 16 {
        padded = bytes.to_vec();
        padded.resize(16, 0);
        &padded[..]
    } else {
        bytes
    };
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC
                | extra,
        })
}

pub(crate) fn zeros(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

pub(crate) fn staging(ctx: &GpuContext, bytes: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: bytes as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// The (pre-activation, post-activation) buffers of a hidden layer.
pub(crate) type HiddenBuffers = (wgpu::Buffer, wgpu::Buffer);

/// Forward passes of `plans` from `input` (`table.max_rows` × in_dim), each layer writing
/// `pre`/`post` buffers; the last layer writes into `out_pre`/`out` at `out_offset`. Returns
/// the dispatches and the per-layer (pre, post) buffers of the hidden layers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_dispatches(
    ctx: &GpuContext,
    plans: &[LayerPlan],
    table: StepTable,
    input: &wgpu::Buffer,
    params: &wgpu::Buffer,
    out_pre: &wgpu::Buffer,
    out: &wgpu::Buffer,
    out_offset: u32,
) -> Result<(Vec<Dispatch>, Vec<HiddenBuffers>)> {
    let mut dispatches = Vec::new();
    let mut hidden: Vec<HiddenBuffers> = Vec::new();
    for (l, p) in plans.iter().enumerate() {
        let last = l + 1 == plans.len();
        if !last {
            let len = table.max_rows * p.out_dim as usize;
            hidden.push((zeros(ctx, "pre", len), zeros(ctx, "post", len)));
        }
        let src = if l == 0 { input } else { &hidden[l - 1].1 };
        let (pre, post) = if last {
            (out_pre, out)
        } else {
            (&hidden[l].0, &hidden[l].1)
        };
        let u = p.forward(if last { out_offset } else { 0 });
        dispatches.push(Dispatch::linear_forward(
            ctx, u, table, src, params, pre, post,
        )?);
    }
    Ok((dispatches, hidden))
}

/// Scores `x` through `head`: one upload, one submission, one readback of all outputs.
pub(crate) async fn forward(
    ctx: &GpuContext,
    head: &Head,
    x: ndarray::ArrayView2<'_, f32>,
) -> Result<Vec<f32>> {
    ctx.check()?;
    let n = x.nrows();
    let k = head.config.outputs;
    let x = x.as_standard_layout();
    let input = storage(
        ctx,
        "x",
        bytemuck::cast_slice(x.as_slice().expect("standard layout")),
        wgpu::BufferUsages::empty(),
    );
    let params = storage(
        ctx,
        "params",
        bytemuck::cast_slice(&head.to_flat()),
        wgpu::BufferUsages::empty(),
    );
    let steps = storage(
        ctx,
        "steps",
        bytemuck::cast_slice(&[0u32, n as u32, 0, 0]),
        wgpu::BufferUsages::empty(),
    );
    let state = storage(
        ctx,
        "state",
        bytemuck::cast_slice(&[0u32, 0, 0, 0]),
        wgpu::BufferUsages::empty(),
    );
    let out_pre = zeros(ctx, "out_pre", n * k);
    let out = zeros(ctx, "out", n * k);
    let plans = layer_plans(head, 0);
    let table = StepTable {
        steps: &steps,
        state: &state,
        max_rows: n,
    };
    let (dispatches, _hidden) =
        forward_dispatches(ctx, &plans, table, &input, &params, &out_pre, &out, 0)?;
    let stage = staging(ctx, n * k * 4);
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("score"),
        });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("score"),
            timestamp_writes: None,
        });
        for d in &dispatches {
            d.record(&mut pass);
        }
    }
    encoder.copy_buffer_to_buffer(&out, 0, &stage, 0, (n * k * 4) as u64);
    ctx.submit(encoder);
    let bytes = ctx.read(&stage).await?;
    // A copy, not a cast: a `Vec<u8>` carries no promise of 4-byte alignment.
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}
