//! The head's matrix products as register-blocked micro-kernels: what the CPU path runs in
//! the `simd128` wasm flavour (`core::arch::wasm32`), where ndarray's `matrixmultiply` has
//! no vector kernel and trails XNNPACK.
//!
//! A crate of its own so that the `web` profile can build it at `opt-level = 3` while the
//! rest of the package is built for size (`opt-level = "z"`, `Cargo.toml`): at "z" these
//! loops run 2.7× slower (scoring 10 000 rows in node: 34 ms at 3, 227 ms at "z").
//!
//! Two kernels, both over a four-lane vector type [`F4`] that is `v128` in the SIMD flavour
//! and `[f32; 4]` elsewhere (the portable form the native tests run: the same code, the
//! same blocking, the same order of every addition, so the same bits):
//!
//! - **broadcast GEMM** `C = A·B`: `B` is packed once per call into panels of [`NR`] = 8
//!   columns (`[k][8]`, contiguous, zero-padded), `A` a cache block ([`MC`] rows) at a time
//!   into blocks of [`MR`] = 4 rows (`[k][4]`, zero-padded). The micro-kernel multiplies one
//!   block by one panel: per `k`, two panel loads, four splat loads and eight multiply-adds
//!   into 4 × 2 `f32x4` accumulators (the most V8 keeps in x86's 16 vector registers:
//!   6 × 8, 5 × 8, 3 × 12 and a k-unrolled 4 × 8 all measured slower in Chromium, and so
//!   did lane shuffles instead of splat loads). Every output is one accumulator lane,
//!   summed in `k` order from 0: exactly the sequential `f32` dot product, whatever the
//!   blocking, the batch or the row's place in it.
//! - **dot kernel** `C = A·Wᵀ` for few output columns (the 128 → 1 output layer): four-lane
//!   partial sums along `k` over contiguous rows of `A` and `W`, reduced at the end.
//!
//! The forward product `X·Wᵀ` packs `Wᵀ` (`W` is stored `[out, in]`; [`Weight`] packs it
//! once per call), the weight gradient `Δᵀ·X` packs `X`, the input gradient `Δ·W` packs `W`:
//! packing is `k·n` copies against `m·k·n` multiply-adds. Bias and activation are applied
//! as each output block is stored.

use ndarray::{Array2, ArrayView2};

/// The activation applied as each output is stored (the head's, mapped by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
}

/// Rows of `A` per micro-kernel call.
pub const MR: usize = 4;
/// Columns of `B` per packed panel (two vectors).
pub const NR: usize = 8;
/// Vectors per panel row.
const NV: usize = NR / 4;
/// Rows of `A` packed at a time: 64 rows of a 384-wide input are 96 KiB (L2); each 4-row
/// block of them (6 KiB) meets one panel of `B` (`k × 8`, 12 KiB) in L1.
const MC: usize = 16 * MR;
/// Output columns up to which `X·Wᵀ` takes the dot kernel (no packing, no padded lanes).
const DOT_MAX_COLS: usize = 4;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod f4 {
    use core::arch::wasm32::*;

    /// Four `f32` lanes in one `v128`.
    #[derive(Clone, Copy)]
    pub struct F4(v128);

    impl F4 {
        #[inline(always)]
        pub fn zero() -> Self {
            F4(f32x4_splat(0.0))
        }
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F4(f32x4_splat(v))
        }
        /// The four values at `s[0..4]`.
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            assert!(s.len() >= 4);
            // SAFETY: `s` holds at least four f32 (checked above; the compiler drops the
            // check where the caller's slicing already proves it); `v128_load` has no
            // alignment requirement.
            F4(unsafe { v128_load(s.as_ptr() as *const v128) })
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            assert!(s.len() >= 4);
            // SAFETY: as in `load`, four writable f32 at `s`, any alignment.
            unsafe { v128_store(s.as_mut_ptr() as *mut v128, self.0) }
        }
        /// `self + a·b`, rounded twice (a multiply, then an add: no fused multiply-add).
        #[inline(always)]
        pub fn mul_add(self, a: F4, b: F4) -> Self {
            F4(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }
        /// `(l0 + l1) + (l2 + l3)`.
        #[inline(always)]
        pub fn sum(self) -> f32 {
            let l = |i| match i {
                0 => f32x4_extract_lane::<0>(self.0),
                1 => f32x4_extract_lane::<1>(self.0),
                2 => f32x4_extract_lane::<2>(self.0),
                _ => f32x4_extract_lane::<3>(self.0),
            };
            (l(0) + l(1)) + (l(2) + l(3))
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod f4 {
    /// Four `f32` lanes: the portable form of the SIMD flavour's `v128`, lane for lane.
    #[derive(Clone, Copy)]
    pub struct F4([f32; 4]);

    impl F4 {
        #[inline(always)]
        pub fn zero() -> Self {
            F4([0.0; 4])
        }
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F4([v; 4])
        }
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            F4([s[0], s[1], s[2], s[3]])
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            s[..4].copy_from_slice(&self.0);
        }
        #[inline(always)]
        pub fn mul_add(self, a: F4, b: F4) -> Self {
            F4(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
        }
        #[inline(always)]
        pub fn sum(self) -> f32 {
            (self.0[0] + self.0[1]) + (self.0[2] + self.0[3])
        }
    }
}

use f4::F4;

/// Whether the CPU path's products go through these kernels: in the `simd128` wasm flavour,
/// where they beat `matrixmultiply`. Elsewhere ndarray's `dot` (with its native AVX/FMA
/// kernels) stays; the tests run the portable form here natively all the same.
pub const ENABLED: bool = cfg!(all(target_arch = "wasm32", target_feature = "simd128"));

/// A read-only matrix as a slice and element strides (row, column), both non-negative.
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Strided<'a> {
    /// `view` as it lies in memory when that is one slice with non-negative strides (a
    /// standard or transposed array), else `None`.
    fn of(view: &ArrayView2<'a, f32>) -> Option<Self> {
        let (rows, cols) = view.dim();
        let data = view.to_slice_memory_order()?;
        let stride = |len: usize, s: isize| -> Option<usize> {
            if len <= 1 {
                Some(0)
            } else {
                usize::try_from(s).ok()
            }
        };
        let rs = stride(rows, view.strides()[0])?;
        let cs = stride(cols, view.strides()[1])?;
        Some(Strided {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }
}

/// Runs `f` on `view` as a [`Strided`], copying it to standard layout first if it is not
/// one slice with non-negative strides.
fn with_strided<R>(view: ArrayView2<f32>, f: impl FnOnce(Strided) -> R) -> R {
    match Strided::of(&view) {
        Some(s) => f(s),
        None => {
            let owned = view.as_standard_layout().into_owned();
            f(Strided::of(&owned.view()).expect("a standard-layout array is one slice"))
        }
    }
}

/// `B` (`k × n`) packed into `⌈n / 8⌉` panels, each `[k][8]` contiguous, columns past `n`
/// zero.
struct Packed {
    k: usize,
    panels: usize,
    data: Vec<f32>,
}

impl Packed {
    fn new(b: ArrayView2<f32>) -> Self {
        let (k, n) = b.dim();
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        // Walk `b` in its memory order where it is one slice: a row-major `B` (X in `Δᵀ·X`,
        // W in `Δ·W`) copies 8-wide runs of each row, a transposed one (`Wᵀ`) reads each
        // row of `W` once and scatters it down its panel column.
        match Strided::of(&b) {
            Some(s) if s.cs == 1 || n == 1 => {
                for kk in 0..k {
                    let row = &s.data[kk * s.rs..][..n];
                    for (p, run) in row.chunks(NR).enumerate() {
                        data[(p * k + kk) * NR..][..run.len()].copy_from_slice(run);
                    }
                }
            }
            Some(s) if s.rs == 1 || k == 1 => {
                for j in 0..n {
                    let col = &s.data[j * s.cs..][..k];
                    let dst = &mut data[(j / NR) * k * NR + j % NR..];
                    for (d, &v) in dst.iter_mut().step_by(NR).zip(col) {
                        *d = v;
                    }
                }
            }
            _ => {
                for ((kk, j), &v) in b.indexed_iter() {
                    data[((j / NR) * k + kk) * NR + j % NR] = v;
                }
            }
        }
        Packed { k, panels, data }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// One block of [`MR`] packed rows of `A` (`[k][MR]`) times one packed panel of `B`
/// (`[k][NR]`): `MR × NR` sums, each in `k` order from 0.
#[inline(always)]
fn micro(a: &[f32], b: &[f32]) -> [[F4; NV]; MR] {
    let mut acc = [[F4::zero(); NV]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let bv: [F4; NV] = std::array::from_fn(|v| F4::load(&bk[4 * v..4 * v + 4]));
        for (acc, &av) in acc.iter_mut().zip(ak) {
            let av = F4::splat(av);
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = acc.mul_add(av, bv);
            }
        }
    }
    acc
}

/// What happens to each output as it is stored: `+ bias[j]`, then the activation.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    act: Option<Activation>,
}

impl Epilogue<'_> {
    #[inline(always)]
    fn apply(&self, j: usize, mut v: f32) -> f32 {
        if let Some(b) = self.bias {
            v += b[j];
        }
        match self.act {
            None => v,
            Some(Activation::Relu) => v.max(0.0),
            Some(Activation::Tanh) => v.tanh(),
        }
    }
}

/// `C = epilogue(A·B)` with `B` packed: `C` row-major `m × n`. `A` is packed a cache
/// block ([`MC`] rows) at a time into blocks of [`MR`] rows (`[k][MR]`, rows past `m`
/// zero), each block then multiplied by every panel of `B` while it sits in L1.
fn gemm_packed(a: &Strided, b: &Packed, n: usize, epi: Epilogue) -> Array2<f32> {
    let (m, k) = (a.rows, a.cols);
    debug_assert_eq!(k, b.k);
    let mut c = vec![0.0f32; m * n];
    let mut apack = vec![0.0f32; MC.min(m.next_multiple_of(MR)) * k];
    let mut block = [0.0f32; NR];
    for ic in (0..m).step_by(MC) {
        let rows = MC.min(m - ic);
        let blocks = rows.div_ceil(MR);
        for bi in (0..blocks).filter(|_| k > 0) {
            let dst = &mut apack[bi * k * MR..(bi + 1) * k * MR];
            for r in 0..MR {
                let i = ic + bi * MR + r;
                let dst = dst.iter_mut().skip(r).step_by(MR);
                if i >= m {
                    dst.for_each(|d| *d = 0.0);
                } else if a.cs == 1 || k == 1 {
                    let row = &a.data[i * a.rs..][..k];
                    dst.zip(row).for_each(|(d, &v)| *d = v);
                } else {
                    let row = a.data[i * a.rs..].iter().step_by(a.cs);
                    dst.zip(row).for_each(|(d, &v)| *d = v);
                }
            }
        }
        for p in 0..b.panels {
            let panel = b.panel(p);
            let j0 = p * NR;
            let width = NR.min(n - j0);
            for bi in 0..blocks {
                let acc = micro(&apack[bi * k * MR..(bi + 1) * k * MR], panel);
                let i0 = ic + bi * MR;
                for (r, acc) in acc.iter().enumerate().take(rows - bi * MR) {
                    for (v, acc) in acc.iter().enumerate() {
                        acc.store(&mut block[4 * v..4 * v + 4]);
                    }
                    let out = &mut c[(i0 + r) * n + j0..][..width];
                    for (jj, o) in out.iter_mut().enumerate() {
                        *o = epi.apply(j0 + jj, block[jj]);
                    }
                }
            }
        }
    }
    Array2::from_shape_vec((m, n), c).expect("m × n outputs")
}

/// `Σ_k x[k]·w[k]`: four-lane partial sums over whole vectors, `(l0 + l1) + (l2 + l3)`, then
/// the remaining `k mod 4` terms in order.
#[inline(always)]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    let k = x.len().min(w.len());
    let (x, w) = (&x[..k], &w[..k]);
    let whole = k - k % 4;
    let mut acc = F4::zero();
    for (xc, wc) in x[..whole].chunks_exact(4).zip(w[..whole].chunks_exact(4)) {
        acc = acc.mul_add(F4::load(xc), F4::load(wc));
    }
    let mut s = acc.sum();
    for (a, b) in x[whole..].iter().zip(&w[whole..]) {
        s += a * b;
    }
    s
}

/// `C = epilogue(X·Wᵀ)` by dot products of contiguous rows (`X` and `W` row-major).
fn gemm_dot(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, epi: Epilogue) -> Array2<f32> {
    let mut c = vec![0.0f32; m * n];
    if k > 0 {
        for (xr, cr) in x.chunks_exact(k).take(m).zip(c.chunks_exact_mut(n.max(1))) {
            for (j, (o, wr)) in cr.iter_mut().zip(w.chunks_exact(k)).enumerate() {
                *o = epi.apply(j, dot(xr, wr));
            }
        }
    } else {
        for cr in c.chunks_exact_mut(n.max(1)) {
            for (j, o) in cr.iter_mut().enumerate() {
                *o = epi.apply(j, 0.0);
            }
        }
    }
    Array2::from_shape_vec((m, n), c).expect("m × n outputs")
}

/// `A·B` for `A` `m × k` and `B` `k × n`, any layouts.
pub fn matmul(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    assert_eq!(a.ncols(), b.nrows(), "inner dimensions");
    let n = b.ncols();
    let packed = Packed::new(b);
    with_strided(a, |a| {
        gemm_packed(
            &a,
            &packed,
            n,
            Epilogue {
                bias: None,
                act: None,
            },
        )
    })
}

/// A layer's weight `W` (`n × k`, `[out, in]`) made ready for `X·Wᵀ`: `Wᵀ` packed into
/// panels, or (for at most [`DOT_MAX_COLS`] outputs, row-major) the rows as they are for
/// the dot kernel. Built once per call and used for every block of rows.
pub struct Weight<'a> {
    w: ArrayView2<'a, f32>,
    packed: Option<Packed>,
}

impl<'a> Weight<'a> {
    pub fn new(w: ArrayView2<'a, f32>) -> Self {
        let dot = w.nrows() <= DOT_MAX_COLS && w.is_standard_layout();
        let packed = (!dot).then(|| Packed::new(w.t()));
        Weight { w, packed }
    }

    /// `act(X·Wᵀ + bias)` for `X` `m × k` and `bias` of length `n`; `act = None` for the
    /// pre-activation.
    pub fn linear(&self, x: ArrayView2<f32>, bias: &[f32], act: Option<Activation>) -> Array2<f32> {
        let (m, k) = x.dim();
        let n = self.w.nrows();
        assert_eq!(self.w.ncols(), k, "inner dimensions");
        assert_eq!(bias.len(), n, "bias length");
        let epi = Epilogue {
            bias: Some(bias),
            act,
        };
        match (&self.packed, x.as_slice(), self.w.as_slice()) {
            (Some(packed), _, _) => with_strided(x, |x| gemm_packed(&x, packed, n, epi)),
            (None, Some(xs), Some(ws)) => gemm_dot(xs, m, ws, n, k, epi),
            (None, _, Some(ws)) => {
                let x = x.as_standard_layout();
                gemm_dot(x.as_slice().expect("standard layout"), m, ws, n, k, epi)
            }
            (None, _, None) => unreachable!("the dot kernel is chosen for a row-major W only"),
        }
    }
}

/// `act(X·Wᵀ + bias)` for `X` `m × k`, `W` `n × k` (a layer's `[out, in]` weight) and
/// `bias` of length `n`; `act = None` for the pre-activation.
pub fn linear(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    bias: &[f32],
    act: Option<Activation>,
) -> Array2<f32> {
    Weight::new(w).linear(x, bias, act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, ShapeBuilder};

    /// Values in [-1, 1) from a 64-bit LCG (Knuth's MMIX constants): test data, no more.
    fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Array2::from_shape_fn((n, d), |_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
    }

    /// `A·B` in float64, independent of the kernels.
    fn reference(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols())
                .map(|k| a[[i, k]] as f64 * b[[k, j]] as f64)
                .sum()
        })
    }

    /// Every entry within `rel` of the reference, relative to the size of its terms
    /// (`Σ |a||b|`): the bound an f32 dot product of this length keeps.
    fn assert_close(got: &Array2<f32>, want: &Array2<f64>, scale: &Array2<f64>, what: &str) {
        assert_eq!(got.dim(), want.dim(), "{what}: shape");
        let k_bound = 1e-6 * (scale.ncols().max(1) as f64);
        for ((idx, &g), (&w, &s)) in got.indexed_iter().zip(want.iter().zip(scale.iter())) {
            let tol = 1e-5f64.max(k_bound) * (s + 1e-30);
            assert!(
                (g as f64 - w).abs() <= tol.max(1e-6 * s),
                "{what} at {idx:?}: {g} vs {w} (scale {s})"
            );
        }
    }

    fn abs_product(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f64> {
        reference(a.mapv(f32::abs).view(), b.mapv(f32::abs).view())
    }

    /// The shapes: empty, single row or column, every remainder of the 4-row and 8-column
    /// blocks, odd inner dimensions, the head's own (384 → 128, 128 → 1), more rows than a
    /// cache block.
    const SHAPES: &[(usize, usize, usize)] = &[
        (0, 5, 3),
        (3, 0, 5),
        (1, 1, 1),
        (1, 384, 128),
        (2, 7, 9),
        (3, 13, 17),
        (4, 8, 8),
        (5, 31, 15),
        (6, 1, 23),
        (7, 33, 1),
        (9, 17, 2),
        (13, 384, 128),
        (67, 129, 33),
        (130, 384, 128),
        (257, 128, 1),
    ];

    #[test]
    fn matmul_matches_the_f64_reference_on_awkward_shapes() {
        for (seed, &(m, k, n)) in SHAPES.iter().enumerate() {
            let a = random(m, k, 2 * seed as u64 + 1);
            let b = random(k, n, 2 * seed as u64 + 2);
            let got = matmul(a.view(), b.view());
            let scale = abs_product(a.view(), b.view());
            assert_close(&got, &reference(a.view(), b.view()), &scale, "A·B");
            // The backward products' layouts: a transposed A (Δᵀ·X) and a transposed B.
            let at = a.t().to_owned();
            let got_t = matmul(at.t(), b.view());
            assert_eq!(got_t, got, "A given transposed, {m}×{k}×{n}: same bits");
            let bt = b.t().to_owned();
            assert_eq!(matmul(a.view(), bt.t()), got, "B transposed, same bits");
            // B as a view that is not one slice (every other column): packed element-wise.
            let wide_b = random(k, 2 * n, 78);
            let b_view = wide_b.slice(s![.., ..;2]);
            assert_eq!(
                matmul(a.view(), b_view),
                matmul(a.view(), b_view.to_owned().view())
            );
            // A strided view that is not one slice (every other column): copied first.
            if k > 0 && n > 0 {
                let wide = random(m, 2 * k, 77);
                let view = wide.slice(s![.., ..;2]);
                assert_close(
                    &matmul(view, b.view()),
                    &reference(view, b.view()),
                    &abs_product(view, b.view()),
                    "strided A",
                );
            }
        }
    }

    #[test]
    fn each_output_is_the_sequential_f32_dot_product() {
        // The broadcast kernel keeps one accumulator per output and adds in k order: its
        // result is bit for bit the plain loop's, whatever the blocking.
        for &(m, k, n) in SHAPES {
            let a = random(m, k, 5);
            let b = random(k, n, 6);
            let got = matmul(a.view(), b.view());
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0f32;
                    for kk in 0..k {
                        s += a[[i, kk]] * b[[kk, j]];
                    }
                    assert_eq!(got[[i, j]].to_bits(), s.to_bits(), "{m}×{k}×{n} at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn linear_matches_the_f64_reference_with_bias_and_activation() {
        for (seed, &(m, k, n)) in SHAPES.iter().enumerate() {
            let x = random(m, k, 3 * seed as u64 + 11);
            let w = random(n, k, 3 * seed as u64 + 12);
            let bias: Vec<f32> = random(1, n, 3 * seed as u64 + 13).into_iter().collect();
            let pre = reference(x.view(), w.t());
            let scale = abs_product(x.view(), w.t()) + 1.0;
            let want = Array2::from_shape_fn(pre.dim(), |(i, j)| pre[[i, j]] + bias[j] as f64);
            for act in [None, Some(Activation::Relu), Some(Activation::Tanh)] {
                let got = linear(x.view(), w.view(), &bias, act);
                let want = want.mapv(|v| match act {
                    None => v,
                    Some(Activation::Relu) => v.max(0.0),
                    Some(Activation::Tanh) => v.tanh(),
                });
                assert_close(&got, &want, &scale, &format!("linear {m}×{k}→{n} {act:?}"));
            }
            // Column-major inputs take the packed path: same values.
            let xf = Array2::from_shape_vec((m, k).f(), x.t().iter().copied().collect()).unwrap();
            assert_close(
                &linear(xf.view(), w.view(), &bias, None),
                &want,
                &scale,
                "column-major X",
            );
        }
    }

    #[test]
    fn dot_kernel_sums_lanes_then_the_tail() {
        for k in [0usize, 1, 3, 4, 5, 8, 11, 384] {
            let x = random(1, k, 21);
            let w = random(1, k, 22);
            let (xs, ws) = (x.as_slice().unwrap(), w.as_slice().unwrap());
            let whole = k - k % 4;
            let mut lanes = [0.0f32; 4];
            for c in 0..whole {
                lanes[c % 4] += xs[c] * ws[c];
            }
            let mut want = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
            for c in whole..k {
                want += xs[c] * ws[c];
            }
            assert_eq!(dot(xs, ws).to_bits(), want.to_bits(), "k = {k}");
        }
    }
}
