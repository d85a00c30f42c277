//! A training run on the GPU: the training and validation sets, weights, gradients and AdamW
//! moments resident; one submission and one readback per epoch (see `mod.rs`).

use std::sync::Arc;

use crate::backend::engine::{Batch, EpochOutcome, RunData};
use crate::error::{Error, Result};
use crate::head::Head;
use crate::objective::{BatchUnit, Family, Prepared};

use super::context::GpuContext;
use super::dispatch::{Dispatch, LossBuffers, StepTable};
use super::kernels::Kernel;
use super::plan::{forward_dispatches, layer_plans, staging, storage, zeros, LayerPlan};
use super::uniforms::{AdamWParams, AddOffsetParams, GatherParams, LossParams, StepEndParams};

/// Per-example `(w, t, m/π̂, observed)` rows of a prepared objective.
fn row_data(p: &Prepared) -> Vec<[f32; 4]> {
    (0..p.t.len())
        .map(|i| [p.w[i], p.t[i], p.mask_weight[i], p.observed[i]])
        .collect()
}

pub(crate) struct GpuEngine<'a> {
    ctx: Arc<GpuContext>,
    data: RunData<'a>,
    head: Head,
    exposure: Option<Head>,
    n_params: usize,
    n_train: usize,
    params: wgpu::Buffer,
    batch_rows: wgpu::Buffer,
    pairs: wgpu::Buffer,
    steps: wgpu::Buffer,
    state: wgpu::Buffer,
    loss_acc: wgpu::Buffer,
    stage: wgpu::Buffer,
    /// Dispatches of one training step and of the validation pass, recorded once.
    train_step: Vec<Dispatch>,
    val_step: Vec<Dispatch>,
    adam_steps: u32,
    /// Capacities of the per-epoch index buffers.
    cap_rows: usize,
    cap_pairs: usize,
    cap_steps: usize,
    // Kept alive for the bind groups.
    _keep: Vec<wgpu::Buffer>,
}

impl<'a> GpuEngine<'a> {
    pub fn new(
        ctx: Arc<GpuContext>,
        data: RunData<'a>,
        head: &Head,
        exposure: Option<&Head>,
    ) -> Result<Self> {
        ctx.check()?;
        let objective = data.prepared.kind().descriptor();
        let train = data.train;
        let n_train = train.len();
        let n_val = data.val.map_or(0, |v| v.len());
        let n = n_train + n_val;
        let dim = head.config.dim;
        let k = head.config.outputs;
        let e_dim = train.exposure.ncols();

        // Resident data: training rows then validation rows.
        let mut x_all = train
            .emb
            .as_standard_layout()
            .to_owned()
            .into_raw_vec_and_offset()
            .0;
        let mut e_all = train
            .exposure
            .as_standard_layout()
            .to_owned()
            .into_raw_vec_and_offset()
            .0;
        let mut rows = row_data(data.prepared);
        if let (Some(v), Some(pv)) = (data.val, data.prepared_val) {
            x_all.extend(v.emb.as_standard_layout().iter());
            e_all.extend(v.exposure.as_standard_layout().iter());
            rows.extend(row_data(pv));
        } else if let Some(v) = data.val {
            x_all.extend(v.emb.as_standard_layout().iter());
            e_all.extend(v.exposure.as_standard_layout().iter());
            rows.extend(std::iter::repeat_n([0.0; 4], v.len()));
        }
        // Fixed logit offsets (a two-part model's other part), training rows then validation
        // rows; a side without offsets adds zeros.
        let has_offsets =
            !train.offset.is_empty() || data.val.is_some_and(|v| !v.offset.is_empty());
        let offsets: Vec<f32> = if has_offsets {
            let side = |ex: &crate::feedback::Examples| {
                (0..ex.len()).map(|i| ex.offset_of(i)).collect::<Vec<f32>>()
            };
            let mut o = side(train);
            if let Some(v) = data.val {
                o.extend(side(v));
            }
            o
        } else {
            Vec::new()
        };
        let none = wgpu::BufferUsages::empty();
        let x_all = storage(&ctx, "x_all", bytemuck::cast_slice(&x_all), none);
        let e_all = storage(&ctx, "e_all", bytemuck::cast_slice(&e_all), none);
        let row_buf = storage(&ctx, "row_data", bytemuck::cast_slice(&rows), none);

        let mut flat = head.to_flat();
        let mut decay: Vec<f32> = head
            .tensors()
            .iter()
            .enumerate()
            .flat_map(|(i, t)| std::iter::repeat_n(if i % 2 == 0 { 1.0 } else { 0.0 }, t.len()))
            .collect();
        if let Some(e) = exposure {
            flat.extend(e.to_flat());
            decay.extend(e.tensors().iter().enumerate().flat_map(|(i, t)| {
                std::iter::repeat_n(if i % 2 == 0 { 1.0f32 } else { 0.0 }, t.len())
            }));
        }
        let n_params = flat.len();
        let params = storage(&ctx, "params", bytemuck::cast_slice(&flat), none);
        let grads = zeros(&ctx, "grads", n_params);
        let m = zeros(&ctx, "adam_m", n_params);
        let v = zeros(&ctx, "adam_v", n_params);
        let decay = storage(&ctx, "decay_mask", bytemuck::cast_slice(&decay), none);

        // Per-epoch index buffers, sized for the largest epoch.
        let is_pairwise = objective.unit == BatchUnit::Pairs;
        let n_pairs = data.prepared.pairs.len() + data.prepared_val.map_or(0, |p| p.pairs.len());
        let cap_rows = if is_pairwise {
            2 * data.prepared.pairs.len() + n_val
        } else {
            n
        };
        let cap_pairs = n_pairs.max(1);
        let units = if is_pairwise {
            data.prepared.pairs.len()
        } else {
            n_train
        };
        let cap_steps = units.div_ceil(data.batch_size) + 1;
        let batch_rows = zeros(&ctx, "batch_rows", cap_rows);
        let pairs = zeros(&ctx, "pairs", cap_pairs * 4);
        let steps = zeros(&ctx, "steps", cap_steps * 4);
        let state = zeros(&ctx, "state", 4);
        let loss_acc = zeros(&ctx, "loss_acc", 4);
        let stage = staging(&ctx, 16 + n_params * 4);

        let batch_max = if is_pairwise {
            2 * data.batch_size
        } else {
            data.batch_size
        };
        let max_rows = batch_max.min(n_train.max(1)).max(n_val).max(1);
        let xb = zeros(&ctx, "x_batch", max_rows * dim);
        let eb = zeros(&ctx, "e_batch", max_rows * e_dim);
        let aux_offset = (max_rows * k) as u32;
        let out_len = max_rows * k + max_rows;
        let out_pre = zeros(&ctx, "out_pre", out_len);
        let out = zeros(&ctx, "out", out_len);
        let d_out = zeros(&ctx, "d_out", out_len);

        let plans = layer_plans(head, 0);
        let exposure_plan: Option<LayerPlan> =
            exposure.map(|e| layer_plans(e, head.num_params())[0]);

        let table = StepTable {
            steps: &steps,
            state: &state,
            max_rows,
        };
        let gather = |width: usize, source: &wgpu::Buffer, dest: &wgpu::Buffer| {
            let p = GatherParams {
                width: width as u32,
                ..Default::default()
            };
            Dispatch::gather(&ctx, p, table, &batch_rows, (source, n), dest)
        };
        let mut forward = vec![gather(dim, &x_all, &xb)?];
        let (head_fwd, hidden) =
            forward_dispatches(&ctx, &plans, table, &xb, &params, &out_pre, &out, 0)?;
        forward.extend(head_fwd);
        if let Some(ep) = exposure_plan {
            if e_dim > 0 {
                forward.push(gather(e_dim, &e_all, &eb)?);
            }
            let (exp_fwd, _) =
                forward_dispatches(&ctx, &[ep], table, &eb, &params, &out_pre, &out, aux_offset)?;
            forward.extend(exp_fwd);
        }
        let offset_buf = if has_offsets {
            let buf = storage(&ctx, "offsets", bytemuck::cast_slice(&offsets), none);
            let p = AddOffsetParams {
                stride: k as u32,
                ..Default::default()
            };
            forward.push(Dispatch::add_offset(
                &ctx,
                p,
                table,
                &batch_rows,
                (&buf, n),
                &out,
            )?);
            Some(buf)
        } else {
            None
        };

        // The family's kernel and the uniform fields it reads: exhaustive, so a family
        // without a GPU kernel does not compile.
        let cfg = &data.prepared.config;
        let (loss_kernel, variant) = match objective.family {
            Family::Logistic { self_normalised } => (Kernel::LossBce, self_normalised as u32),
            Family::Strata => (Kernel::LossStrata, 0),
            Family::Pairwise => (Kernel::LossPairwise, 0),
            Family::Beta => (Kernel::LossBeta, 0),
        };
        let loss_buffers = LossBuffers {
            batch_rows: &batch_rows,
            row_data: &row_buf,
            outputs: &out,
            pairs: &pairs,
            d_out: &d_out,
            loss_acc: &loss_acc,
        };
        let loss = |mode: u32| {
            let p = LossParams {
                mode,
                nonneg: cfg.nonneg as u32,
                logit_clip: cfg.logit_clip as f32,
                variant,
                beta_lambda: cfg.beta.lambda as f32,
                beta_alpha0: cfg.beta.alpha0 as f32,
                beta_beta0: cfg.beta.beta0 as f32,
                beta_tau_min: cfg.beta.tau_min as f32,
                aux_offset,
                ..Default::default()
            };
            Dispatch::loss(&ctx, loss_kernel, p, k, table, loss_buffers)
        };
        let step_end = |advance_optimizer: u32| {
            let p = StepEndParams {
                advance_optimizer,
                ..Default::default()
            };
            Dispatch::step_end(&ctx, p, &state)
        };

        // Backward: last layer first; hidden deltas in their own buffers.
        let mut backward = Vec::new();
        let deltas: Vec<wgpu::Buffer> = plans[..plans.len() - 1]
            .iter()
            .map(|p| zeros(&ctx, "delta", max_rows * p.out_dim as usize))
            .collect();
        for l in (0..plans.len()).rev() {
            let p = plans[l];
            let delta = if l + 1 == plans.len() {
                &d_out
            } else {
                &deltas[l]
            };
            let input = if l == 0 { &xb } else { &hidden[l - 1].1 };
            backward.push(Dispatch::linear_backward_weights(
                &ctx,
                p.backward_weights(0),
                table,
                delta,
                input,
                &grads,
            )?);
            if l > 0 {
                backward.push(Dispatch::linear_backward_input(
                    &ctx,
                    p.backward_input(&plans[l - 1]),
                    table,
                    delta,
                    &params,
                    &hidden[l - 1].0,
                    &deltas[l - 1],
                )?);
            }
        }
        if let Some(ep) = exposure_plan {
            backward.push(Dispatch::linear_backward_weights(
                &ctx,
                ep.backward_weights(aux_offset),
                table,
                &d_out,
                &eb,
                &grads,
            )?);
        }
        let o = data.optimizer;
        let adam_params = AdamWParams {
            lr: o.lr as f32,
            beta1: o.beta1 as f32,
            beta2: o.beta2 as f32,
            eps: o.eps as f32,
            weight_decay: o.weight_decay as f32,
            count: n_params as u32,
            ..Default::default()
        };
        let adam = Dispatch::adamw(&ctx, adam_params, &state, &grads, &decay, [&params, &m, &v])?;

        let mut train_step: Vec<Dispatch> = Vec::new();
        let mut val_step: Vec<Dispatch> = Vec::new();
        // Both passes share the forward dispatches (same bind groups).
        train_step.extend(forward.iter().cloned());
        val_step.extend(forward);
        train_step.push(loss(0)?);
        train_step.extend(backward);
        train_step.push(adam);
        train_step.push(step_end(1)?);
        val_step.push(loss(1)?);
        val_step.push(step_end(0)?);

        let mut keep = vec![
            x_all, e_all, row_buf, grads, m, v, decay, xb, eb, out_pre, out, d_out,
        ];
        keep.extend(deltas);
        keep.extend(offset_buf);
        keep.extend(hidden.into_iter().flat_map(|(a, b)| [a, b]));
        Ok(GpuEngine {
            ctx,
            data,
            head: head.clone(),
            exposure: exposure.cloned(),
            n_params,
            n_train,
            params,
            batch_rows,
            pairs,
            steps,
            state,
            loss_acc,
            stage,
            train_step,
            val_step,
            adam_steps: 0,
            cap_rows,
            cap_pairs,
            cap_steps,
            _keep: keep,
        })
    }
}

impl GpuEngine<'_> {
    pub(crate) async fn epoch(
        &mut self,
        batches: &[Batch],
        validate: bool,
    ) -> Result<EpochOutcome> {
        self.ctx.check()?;
        let validate = validate && self.data.prepared_val.is_some();
        let mut rows: Vec<u32> = Vec::new();
        let mut pairs: Vec<[u32; 4]> = Vec::new();
        let mut steps: Vec<[u32; 4]> = Vec::new();
        for (batch_rows, batch_pairs) in batches {
            steps.push([
                rows.len() as u32,
                batch_rows.len() as u32,
                pairs.len() as u32,
                batch_pairs.len() as u32,
            ]);
            rows.extend(batch_rows.iter().map(|&r| r as u32));
            pairs.extend(
                batch_pairs
                    .iter()
                    .map(|&(w, l, wt)| [w as u32, l as u32, wt.to_bits(), 0]),
            );
        }
        if validate {
            let pv = self.data.prepared_val.expect("checked");
            let n_val = pv.t.len();
            steps.push([
                rows.len() as u32,
                n_val as u32,
                pairs.len() as u32,
                pv.pairs.len() as u32,
            ]);
            rows.extend((0..n_val).map(|i| (self.n_train + i) as u32));
            pairs.extend(
                pv.pairs
                    .iter()
                    .map(|&(w, l, wt)| [w as u32, l as u32, wt.to_bits(), 0]),
            );
        }
        if rows.len() > self.cap_rows
            || pairs.len() > self.cap_pairs
            || steps.len() > self.cap_steps
        {
            return Err(Error::InvalidData(
                "epoch larger than the buffers planned for it".into(),
            ));
        }
        let q = &self.ctx.queue;
        q.write_buffer(
            &self.batch_rows,
            0,
            bytemuck::cast_slice(
                &rows
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, 4))
                    .take(rows.len().max(4))
                    .collect::<Vec<u32>>(),
            ),
        );
        if !pairs.is_empty() {
            q.write_buffer(&self.pairs, 0, bytemuck::cast_slice(&pairs));
        }
        q.write_buffer(&self.steps, 0, bytemuck::cast_slice(&steps));
        q.write_buffer(
            &self.state,
            0,
            bytemuck::cast_slice(&[0u32, self.adam_steps, 0, 0]),
        );
        q.write_buffer(&self.loss_acc, 0, bytemuck::cast_slice(&[0f32; 4]));

        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("epoch"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("epoch"),
                timestamp_writes: None,
            });
            for _ in batches {
                for d in &self.train_step {
                    d.record(&mut pass);
                }
            }
            if validate {
                for d in &self.val_step {
                    d.record(&mut pass);
                }
            }
        }
        encoder.copy_buffer_to_buffer(&self.loss_acc, 0, &self.stage, 0, 16);
        encoder.copy_buffer_to_buffer(&self.params, 0, &self.stage, 16, (self.n_params * 4) as u64);
        self.ctx.submit(encoder);
        let bytes = self.ctx.read(&self.stage).await?;
        self.adam_steps += batches.len() as u32;

        // A copy, not a cast: a `Vec<u8>` carries no promise of 4-byte alignment.
        let floats: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let (acc, flat) = floats.split_at(4);
        let head_len = self.head.num_params();
        self.head.load_flat(&flat[..head_len])?;
        if let Some(e) = self.exposure.as_mut() {
            e.load_flat(&flat[head_len..])?;
        }
        Ok(EpochOutcome {
            train_loss: (acc[0] / acc[1]) as f64,
            val_loss: validate.then_some(acc[2] as f64),
            head: self.head.clone(),
            exposure: self.exposure.clone(),
        })
    }
}
