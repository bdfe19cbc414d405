//! Dense convolutions run channel-last on the `gemm` crate's matrix kernels.
//!
//! Most of both models' arithmetic is in 1x1 ("pointwise") convolutions: matrix products whose
//! inner dimension is the channel count (16 to 960) and whose other dimension is the pixel count
//! (up to 121,600 for CenterFace at 800x608). tract runs them through its own matrix kernels, which
//! pack the activations again before every product; at these shapes they reach about half the
//! throughput of `gemm` (PERFORMANCE.md). [`GemmConv`] runs them, and the few dense convolutions
//! with a larger window (CenterFace's 3x3 head convolution), on `gemm`:
//!
//! - the activations are read channel-last (`[.., pixels, channels]`, one row per pixel), so the
//!   product is `pixels x (window x in_channels)` times `(window x in_channels) x out_channels`;
//! - output pixels are processed in blocks whose output fits in the L2 cache. For a window larger
//!   than 1x1 the block's input patches are gathered into a buffer first (im2col, one block at a
//!   time, never the whole image). The bias and the activation that follow the convolution
//!   (ReLU, ReLU6) are applied to each block while it is still in cache, instead of in extra
//!   passes over the whole tensor.
//!
//! A windowed convolution with few products per output value (`DIRECT_DEPTH`: both models' 3x3
//! stem over 3 channels, 27) is computed directly instead, row by row, with its weights held in
//! registers: im2col would gather nine floats at a time for a product only 27 deep, which costs
//! more than the product itself. Computed
//! by rows, it can also feed [`crate::depthwise::ExpandDepthwiseProject`] in place of a 1x1
//! expansion.
//!
//! [`crate::rewrite`] puts these ops into tract's models.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::internal::ensure;

use crate::kernel_op::{Kernel, LANES, Params, lanes, same_bits, store_sum, tract_op};

/// Bytes of output computed per block: the block, its input rows and the weights stay
/// within a 512 KiB L2 cache while the bias and activation are applied. Chosen with a
/// micro-benchmark over CenterFace's shapes (65 KiB to 1 MiB blocks; 256 KiB was best or within
/// noise of best for every shape).
const BLOCK_BYTES: usize = 256 * 1024;

/// A windowed convolution with at most this many products per output value (window taps x input
/// channels) and a multiple of `LANES` output channels is computed directly, without im2col
/// and `gemm`: CenterFace's stem (3x3 over 3 channels, 27 products, 32 output channels) would
/// otherwise gather nine floats at a time and multiply matrices only 27 deep.
const DIRECT_DEPTH: usize = 27;

/// `gemm`'s threshold for repacking the weights, in micro-kernel columns (6 output pixels each):
/// its largest value, so a product over up to 1,536 pixels reads the weights where they are.
///
/// `gemm` sees our row-major `pixels x out_channels` output as its transpose, so its left-hand
/// operand is the weight matrix, already laid out the way its kernel reads it (`out_channels`
/// contiguous for each input channel) whenever `out_channels` is a multiple of 16. By default it
/// still copies the weights into a packed buffer on every call over more than 48 pixels: for
/// the classifier (7x7 and 14x14 blocks whose weights are up to 1.6 MB, one product per image)
/// that copy was a large share of the run (`perf`; PERFORMANCE.md). With out_channels not a
/// multiple of 16 `gemm` packs whatever this says.
const GEMM_LHS_PACKING_THRESHOLD: usize = 256;

/// Output channels per `gemm` product for large weight matrices ([`BLOCKED_WEIGHTS`]): their
/// weights are stored in blocks of this many output channels (the last block holds the rest),
/// each block a `depth x block` row-major matrix, which is the layout `gemm`'s AVX-512
/// micro-kernel (64 output channels by 6 pixels) reads from a packed buffer. One product per
/// block then reads its weights contiguously, in place, where one product over the whole
/// `depth x out_channels` matrix strode `out_channels` floats from one input channel to the next
/// (5 KiB for the classifier's 320 -> 1280 convolution).
const CHANNEL_BLOCK: usize = 64;

/// Weight matrices with at least this many values (256 KiB) are stored and multiplied in blocks
/// of [`CHANNEL_BLOCK`] output channels; smaller ones in one block, one product. With
/// `node_profile` on the classifier, blocks made the large matrices (its 320 -> 1280 convolution,
/// its 7x7 blocks) markedly faster, but those with weights of 100-220 KiB slower: one `gemm` call
/// per block instead of one in all, for products of only 196 pixels.
const BLOCKED_WEIGHTS: usize = 64 * 1024;

/// Output channels per block of weights and per `gemm` product for a convolution with
/// `weights` values and `out_channels` outputs: [`CHANNEL_BLOCK`] for matrices of at least
/// [`BLOCKED_WEIGHTS`] values, all of them (one block) otherwise.
fn channel_block(weights: usize, out_channels: usize) -> usize {
    if weights >= BLOCKED_WEIGHTS {
        CHANNEL_BLOCK
    } else {
        out_channels
    }
}

/// How many rows of `out_channels` biases the epilogue adds at once: the fewest whose values
/// fill whole vectors of `LANES` and number at least 256 (four times the epilogue loop's unrolled
/// 64 values).
fn bias_rows(out_channels: usize) -> usize {
    let mut rows = 1;
    while !(rows * out_channels).is_multiple_of(LANES) || rows * out_channels < 256 {
        rows += 1;
    }
    rows
}

/// Set [`GEMM_LHS_PACKING_THRESHOLD`]. `gemm` keeps it in a process-wide atomic: every
/// [`GemmConv`] sets it when built, before any product runs.
fn tune_gemm() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| gemm::set_lhs_packing_threshold_single_thread(GEMM_LHS_PACKING_THRESHOLD));
}

/// The sliding window of a convolution larger than 1x1, over a channel-last input
/// `[batch, in_height, in_width, in_channels]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// Input height and width.
    pub(crate) input: [usize; 2],
    /// Output height and width.
    pub(crate) output: [usize; 2],
    /// Kernel height and width.
    pub(crate) kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub(crate) stride: [usize; 2],
    /// Vertical and horizontal dilation.
    pub(crate) dilation: [usize; 2],
    /// Zero padding before the first row and the first column.
    pub(crate) pad_before: [usize; 2],
}

impl Window {
    /// The input row (`axis` 0) or column (`axis` 1) under kernel position `k` for output
    /// position `o`, `None` where it falls in the padding.
    #[inline(always)]
    pub(crate) fn input_index(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.pad_before[axis])
            .filter(|&i| i < self.input[axis])
    }

    /// The output columns whose window lies inside the image horizontally, clear of the
    /// padding (a contiguous range, empty if there is none).
    pub(crate) fn interior_columns(&self) -> std::ops::Range<usize> {
        // Column `ox` is inside when `pad <= ox * stride` and
        // `ox * stride - pad + span < width`, `span` being the window's extent less one.
        let (stride, pad) = (self.stride[1], self.pad_before[1]);
        let span = (self.kernel[1] - 1) * self.dilation[1];
        let first = pad.div_ceil(stride);
        let end = match (self.input[1] + pad).checked_sub(span + 1) {
            Some(last_start) => (last_start / stride + 1).min(self.output[1]),
            None => 0,
        };
        if first < end { first..end } else { 0..0 }
    }
}

/// A convolution over a channel-last input, with its bias and a clamp fused in:
/// `y[.., o] = clamp(bias[o] + sum_i p[.., i] * w[i, o], lo, hi)`, where `p` is the input itself
/// for a 1x1 convolution (any rank, channels last) and the input patches under the [`Window`]
/// otherwise (rank 4, `[batch, height, width, channels]`).
#[derive(Debug, Clone)]
pub(crate) struct GemmConv {
    /// Weights, `(window x in_channels) x out_channels` in blocks of [`GemmConv::channel_block`]
    /// output channels (the last one holds the rest), each block row-major (`depth x block`);
    /// the rows in (kernel row, kernel column, input channel) order. Block `b` starts at
    /// `b * channel_block * depth`. With one block, a plain row-major matrix.
    weights: Params,
    /// One bias per output channel, repeated for as many rows as [`bias_rows`] says: the
    /// epilogue after each product then adds it over several rows at once, in full vectors,
    /// instead of row by row (a 24-channel row is one 16-wide and one 8-wide vector, then the
    /// loop's overhead).
    bias: Params,
    in_channels: usize,
    out_channels: usize,
    /// `None` for a 1x1 convolution with stride 1 and no padding.
    window: Option<Window>,
    /// Lower clamp bound (`-inf` for none).
    lo: f32,
    /// Upper clamp bound (`+inf` for none).
    hi: f32,
}

impl PartialEq for GemmConv {
    fn eq(&self, other: &Self) -> bool {
        self.in_channels == other.in_channels
            && self.out_channels == other.out_channels
            && self.window == other.window
            && same_bits(&[self.lo, self.hi], &[other.lo, other.hi])
            && same_bits(&self.weights, &other.weights)
            && same_bits(&self.bias, &other.bias)
    }
}

impl Eq for GemmConv {}

impl GemmConv {
    /// A 1x1 convolution from weights in ONNX order (`out_channels x in_channels`, row-major).
    pub(crate) fn pointwise(
        weights_oi: &[f32],
        out_channels: usize,
        in_channels: usize,
        bias: Vec<f32>,
        lo: f32,
        hi: f32,
    ) -> TractResult<GemmConv> {
        GemmConv::windowed(weights_oi, out_channels, in_channels, None, bias, lo, hi)
    }

    /// A convolution from weights in ONNX order (`out x in x kernel height x kernel width`,
    /// row-major; 1x1 when `window` is `None`).
    pub(crate) fn windowed(
        weights_oihw: &[f32],
        out_channels: usize,
        in_channels: usize,
        window: Option<Window>,
        bias: Vec<f32>,
        lo: f32,
        hi: f32,
    ) -> TractResult<GemmConv> {
        let taps = window.as_ref().map_or(1, |w| w.kernel[0] * w.kernel[1]);
        ensure!(
            out_channels > 0 && in_channels > 0 && taps > 0,
            "convolution: empty {out_channels}x{in_channels}x{taps} weights"
        );
        ensure!(
            weights_oihw.len() == out_channels * in_channels * taps && bias.len() == out_channels,
            "convolution: {} weights and {} biases for {out_channels}x{in_channels}x{taps}",
            weights_oihw.len(),
            bias.len()
        );
        if let Some(w) = &window {
            ensure!(
                w.output.iter().all(|&d| d > 0)
                    && w.stride.iter().chain(&w.dilation).all(|&d| d > 0),
                "convolution: degenerate window {w:?}"
            );
        }
        tune_gemm();
        // From [o][i][tap] to [o block][tap][i][o in block].
        let depth = in_channels * taps;
        let channel_block = channel_block(weights_oihw.len(), out_channels);
        let mut weights = vec![0f32; weights_oihw.len()];
        for o in 0..out_channels {
            let (block, within) = (o / channel_block, o % channel_block);
            let first = block * channel_block;
            let width = channel_block.min(out_channels - first);
            for i in 0..in_channels {
                for t in 0..taps {
                    weights[first * depth + (t * in_channels + i) * width + within] =
                        weights_oihw[(o * in_channels + i) * taps + t];
                }
            }
        }
        Ok(GemmConv {
            weights: Params::new(&weights),
            bias: Params::new(&bias.repeat(bias_rows(out_channels))),
            in_channels,
            out_channels,
            window,
            lo,
            hi,
        })
    }

    /// Output channels per block of the weights and per `gemm` product ([`channel_block`]).
    fn channel_block(&self) -> usize {
        channel_block(self.weights.len(), self.out_channels)
    }

    /// Input channels.
    pub(crate) fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub(crate) fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Whether this is a 1x1 convolution with stride 1 and no padding.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.window.is_none()
    }

    /// The window, `None` for a 1x1 convolution.
    pub(crate) fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    /// Inner dimension of the product: window taps times input channels.
    fn depth(&self) -> usize {
        self.window
            .as_ref()
            .map_or(1, |w| w.kernel[0] * w.kernel[1])
            * self.in_channels
    }

    /// Fill `patches` (`rows x (taps x in_channels)`) with the input patches of the output pixels
    /// `first..first + rows` (counted over batch, output rows and columns), zeros for padding.
    fn gather(&self, w: &Window, x: &[f32], first: usize, patches: &mut [f32]) {
        let c = self.in_channels;
        let [ih, iw] = w.input;
        let [oh, ow] = w.output;
        let [kh, kw] = w.kernel;
        // One kernel row of taps, `kw x c` values: contiguous in the input when the columns are
        // not dilated, so it is copied in one piece unless it overlaps the padding.
        let span = kw * c;
        for (r, patch) in patches.chunks_exact_mut(kh * span).enumerate() {
            let p = first + r;
            let (batch, oy, ox) = (p / (oh * ow), p / ow % oh, p % ow);
            let x0 = (ox * w.stride[1]).checked_sub(w.pad_before[1]);
            for (ky, row) in patch.chunks_exact_mut(span).enumerate() {
                let Some(iy) = w.input_index(0, oy, ky) else {
                    row.fill(0.0);
                    continue;
                };
                let line = (batch * ih + iy) * iw;
                match x0 {
                    Some(x0) if w.dilation[1] == 1 && x0 + kw <= iw => {
                        let at = (line + x0) * c;
                        row.copy_from_slice(&x[at..at + span]);
                    }
                    _ => {
                        for (kx, tap) in row.chunks_exact_mut(c).enumerate() {
                            match w.input_index(1, ox, kx) {
                                Some(ix) => {
                                    let at = (line + ix) * c;
                                    tap.copy_from_slice(&x[at..at + c]);
                                }
                                None => tap.fill(0.0),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The direct computation of small windowed convolutions (`DIRECT_DEPTH`).
impl GemmConv {
    /// The window, when this convolution is computed directly (`DIRECT_DEPTH`): then
    /// [`GemmConv::compute_row`] computes any one output row on its own.
    pub(crate) fn direct_window(&self) -> Option<&Window> {
        self.window.as_ref().filter(|_| {
            self.depth() <= DIRECT_DEPTH
                && self.out_channels.is_multiple_of(LANES)
                && self.channel_block() == self.out_channels
        })
    }

    /// Output row `oy` of image `batch` (`out_width x out_channels`) from the whole channel-last
    /// input `x`, for a convolution computed directly ([`GemmConv::direct_window`]); for any
    /// other, nothing is written.
    pub(crate) fn compute_row(&self, x: &[f32], batch: usize, oy: usize, out: &mut [f32]) {
        if let Some(w) = self.direct_window() {
            self.direct_row(w, x, batch, oy, &w.interior_columns(), out);
        }
    }

    /// Compute `y` (`[batch, out_height, out_width, out_channels]`) directly, row by row.
    fn compute_direct(&self, w: &Window, x: &[f32], y: &mut [f32]) {
        let [oh, ow] = w.output;
        let interior = w.interior_columns();
        for (r, out) in y.chunks_exact_mut(ow * self.out_channels).enumerate() {
            self.direct_row(w, x, r / oh, r % oh, &interior, out);
        }
    }

    /// Output row `oy` of image `batch`. Where the window is three rows of nine contiguous
    /// values (a 3x3 window over 3 channels, columns not dilated, as both models' stems) and the
    /// row's window lies inside the image vertically, the `interior` columns go through
    /// [`GemmConv::direct_rows`]; every other pixel through [`GemmConv::direct_pixel`].
    fn direct_row(
        &self,
        w: &Window,
        x: &[f32],
        batch: usize,
        oy: usize,
        interior: &std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let (c, n) = (self.in_channels, self.out_channels);
        let [ih, iw] = w.input;
        let [kh, kw] = w.kernel;
        let line = iw * c;
        let row = |ky: usize| {
            w.input_index(0, oy, ky).and_then(|iy| {
                let at = (batch * ih + iy) * line;
                x.get(at..at + line)
            })
        };
        let rows_kernel = kh == 3 && kw * c == 9 && w.dilation[1] == 1;
        let done = match (rows_kernel, row(0), row(1), row(2)) {
            (true, Some(r0), Some(r1), Some(r2)) => {
                self.direct_rows::<3, 9>(w, [r0, r1, r2], interior.clone(), out);
                true
            }
            _ => false,
        };
        for (ox, pixel) in out.chunks_exact_mut(n).enumerate() {
            if !(done && interior.contains(&ox)) {
                self.direct_pixel(w, x, [batch, oy, ox], pixel);
            }
        }
    }

    /// Output columns `oxs` of one output row, whose windows lie inside the image, from the
    /// `ROWS` input rows under the window, each contributing `SPAN` contiguous values (kernel
    /// columns x input channels). Output channel block by block, so that the block's weights
    /// are read once per row; each input row's products go into their own accumulator, so that
    /// the multiply-adds form `ROWS` short dependency chains rather than one long one.
    fn direct_rows<const ROWS: usize, const SPAN: usize>(
        &self,
        w: &Window,
        rows: [&[f32]; ROWS],
        oxs: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let (c, n) = (self.in_channels, self.out_channels);
        let (stride, pad) = (w.stride[1], w.pad_before[1]);
        for cb in (0..n).step_by(LANES) {
            let weights: [[[f32; LANES]; SPAN]; ROWS] = std::array::from_fn(|r| {
                std::array::from_fn(|j| lanes(&self.weights, (r * SPAN + j) * n + cb))
            });
            let bias = lanes(&self.bias, cb);
            for ox in oxs.clone() {
                let at = (ox * stride).saturating_sub(pad) * c;
                let mut sums = [[0f32; LANES]; ROWS];
                for ((row, weights), sum) in rows.iter().zip(&weights).zip(&mut sums) {
                    let xs: [f32; SPAN] = row
                        .get(at..at + SPAN)
                        .and_then(|s| <[f32; SPAN]>::try_from(s).ok())
                        .unwrap_or([0.0; SPAN]);
                    for (x, wt) in xs.iter().zip(weights) {
                        for l in 0..LANES {
                            sum[l] = x.mul_add(wt[l], sum[l]);
                        }
                    }
                }
                store_sum(out, ox * n + cb, bias, &sums, self.lo, self.hi);
            }
        }
    }

    /// One output pixel (`out_channels` values) at `[batch, oy, ox]`, skipping the products
    /// that fall in the padding.
    fn direct_pixel(&self, w: &Window, x: &[f32], [batch, oy, ox]: [usize; 3], out: &mut [f32]) {
        let (c, n) = (self.in_channels, self.out_channels);
        let [ih, iw] = w.input;
        let [kh, kw] = w.kernel;
        for cb in (0..n).step_by(LANES) {
            let mut acc = lanes(&self.bias, cb);
            for ky in 0..kh {
                let Some(iy) = w.input_index(0, oy, ky) else {
                    continue;
                };
                for kx in 0..kw {
                    let Some(ix) = w.input_index(1, ox, kx) else {
                        continue;
                    };
                    for ci in 0..c {
                        let v = x
                            .get(((batch * ih + iy) * iw + ix) * c + ci)
                            .copied()
                            .unwrap_or(0.0);
                        let wt = lanes(&self.weights, ((ky * kw + kx) * c + ci) * n + cb);
                        for j in 0..LANES {
                            acc[j] = v.mul_add(wt[j], acc[j]);
                        }
                    }
                }
            }
            store_sum(out, cb, acc, &[], self.lo, self.hi);
        }
    }
}

/// `a` clamped to `[lo, hi]`, written as comparisons so that it compiles to one vector max and
/// one vector min (`f32::max` also has to handle NaN operands).
#[inline(always)]
pub(crate) fn clamp(a: f32, lo: f32, hi: f32) -> f32 {
    let a = if a > lo { a } else { lo };
    if a < hi { a } else { hi }
}

impl Kernel for GemmConv {
    const NAME: &'static str = "GemmConv";

    fn describe(&self) -> Vec<String> {
        let window = match &self.window {
            None => "1x1".to_string(),
            Some(w) => format!(
                "{}x{} stride {:?} dilation {:?}",
                w.kernel[0], w.kernel[1], w.stride, w.dilation
            ),
        };
        vec![format!(
            "{window}, {} -> {} channels, clamp [{}, {}]",
            self.in_channels, self.out_channels, self.lo, self.hi
        )]
    }

    /// Output shape for a channel-last input shape, or why the input does not fit.
    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>> {
        ensure!(
            input.last() == Some(&self.in_channels.into()),
            "convolution expects {} channels last, got shape {input:?}",
            self.in_channels
        );
        let mut shape: TVec<D> = input.into();
        if let Some(w) = &self.window {
            ensure!(
                input.len() == 4 && input[1] == w.input[0].into() && input[2] == w.input[1].into(),
                "convolution expects [batch, {}, {}, channels], got {input:?}",
                w.input[0],
                w.input[1]
            );
            shape[1] = w.output[0].into();
            shape[2] = w.output[1].into();
        }
        if let Some(last) = shape.last_mut() {
            *last = self.out_channels.into();
        }
        Ok(shape)
    }

    /// Compute `y` (`pixels x out_channels`) from the channel-last input `x`, both row-major.
    fn compute(&self, x: &[f32], y: &mut [f32]) {
        let (k, n) = (self.depth(), self.out_channels);
        if let Some(window) = self.direct_window() {
            self.compute_direct(window, x, y);
            return;
        }
        let rows_per_block = (BLOCK_BYTES / 4 / n.max(k)).max(8);
        let mut patches = Vec::new();
        for (b, yb) in y.chunks_mut(rows_per_block * n).enumerate() {
            let rows = yb.len() / n;
            let first = b * rows_per_block;
            let lhs: &[f32] = match &self.window {
                None => &x[first * k..(first + rows) * k],
                Some(window) => {
                    patches.resize(rows * k, 0.0);
                    self.gather(window, x, first, &mut patches);
                    &patches
                }
            };
            // The SAFETY argument below rests on these sizes: checked in every build, once per
            // block (a few per image), not only in debug builds, which this crate never is.
            assert_eq!(lhs.len(), rows * k, "gemm lhs size");
            // One product per block of output channels, each writing its columns of `yb`.
            let channel_block = self.channel_block();
            for (i, block) in self.weights.chunks(k * channel_block).enumerate() {
                let width = block.len() / k;
                let dst = &mut yb[i * channel_block..];
                assert!(
                    rows == 0 || dst.len() >= (rows - 1) * n + width,
                    "gemm dst size"
                );
                assert_eq!(block.len(), k * width, "gemm weight block size");
                // SAFETY: `dst` starts at this block's first column of `yb`, which holds
                // rows x n values (rows = yb.len() / n): rows x width values at row stride n from
                // there end within it, since the block's columns end at or before n. `lhs` holds
                // exactly rows x k values (the slice of `x` is bounds-checked, `patches` was
                // resized to it) and `block` k x width (the weights are k x n, checked in
                // `windowed`, cut in blocks of whole rows), all row-major; with
                // `read_dst == false` gemm only writes those values of `dst`.
                #[allow(unsafe_code)]
                unsafe {
                    gemm::gemm(
                        rows,
                        width,
                        k,
                        dst.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        lhs.as_ptr(),
                        1,
                        k as isize,
                        block.as_ptr(),
                        1,
                        width as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            // `yb` starts at a row, and `bias` is whole rows of biases: each chunk lines up.
            for chunk in yb.chunks_mut(self.bias.len()) {
                for (v, b) in chunk.iter_mut().zip(self.bias.iter()) {
                    *v = clamp(*v + b, self.lo, self.hi);
                }
            }
        }
    }
}

tract_op!(GemmConv);

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::internal::{EvalContext, EvalOp};

    /// The op against a direct evaluation of its formula.
    #[test]
    fn pointwise_matches_the_formula() {
        check_pointwise(1000, 7, 13);
    }

    /// Weights large enough to be cut in blocks of output channels (`BLOCKED_WEIGHTS`), with a
    /// last block narrower than the others (230 = 3 x 64 + 38).
    #[test]
    fn blocked_pointwise_matches_the_formula() {
        let (k, n) = (300, 230);
        assert!(k * n >= BLOCKED_WEIGHTS && n % CHANNEL_BLOCK != 0);
        let op = GemmConv::pointwise(&vec![0.0; k * n], n, k, vec![0.0; n], 0.0, 6.0).unwrap();
        assert_eq!(op.channel_block(), CHANNEL_BLOCK);
        check_pointwise(98, k, n);
    }

    /// A pointwise op over `rows` pixels, `k` -> `n` channels, against its formula.
    fn check_pointwise(rows: usize, k: usize, n: usize) {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0 / (k as f32).sqrt())
            .collect();
        let bias: Vec<f32> = (0..n).map(|o| (o % 13) as f32 * 0.25 - 1.0).collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 17 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let op = GemmConv::pointwise(&w, n, k, bias.clone(), 0.0, 6.0).unwrap();
        let input = Tensor::from_shape(&[2, rows / 2, k], &x).unwrap();
        let out = op
            .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
            .unwrap();
        assert_eq!(out[0].shape(), &[2, rows / 2, n]);
        let y = out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let mut clamped = 0;
        for r in 0..rows {
            for o in 0..n {
                let sum: f32 = (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum();
                let want = (sum + bias[o]).clamp(0.0, 6.0);
                clamped += usize::from(want == 0.0 || want == 6.0);
                let got = y[r * n + o];
                assert!(
                    (got - want).abs() < 1e-4,
                    "row {r} channel {o}: {got} vs {want}"
                );
            }
        }
        // The data exercise both bounds and the inside of the clamp.
        assert!(clamped > 0 && clamped < rows * n);
    }

    /// A windowed convolution against a direct evaluation of its definition, with padding,
    /// stride, dilation, a batch of 2 and blocks that split output rows (`BLOCK_BYTES`): through
    /// im2col and `gemm`.
    #[test]
    fn windowed_matches_the_definition() {
        check_against_definition(3, 5, [37, 45], [19, 22], [1, 2]);
    }

    /// The direct path (`DIRECT_DEPTH`): 27 products with the registers kernel inside the image
    /// and pixel by pixel at the edges (32 output channels, as CenterFace's stem; 16 with dilated
    /// columns), and a 9-product window that goes pixel by pixel everywhere.
    #[test]
    fn direct_matches_the_definition() {
        check_against_definition(3, 32, [37, 45], [19, 23], [1, 1]);
        check_against_definition(3, 16, [20, 31], [9, 15], [2, 2]);
        check_against_definition(1, 16, [9, 9], [5, 5], [1, 1]);
    }

    /// A 3x3 convolution with stride 2 and padding 1 from `c` to `o` channels on a batch of 2,
    /// against the definition.
    fn check_against_definition(
        c: usize,
        o: usize,
        input: [usize; 2],
        output: [usize; 2],
        dilation: [usize; 2],
    ) {
        let n = 2;
        let [ih, iw] = input;
        let window = Window {
            input,
            output,
            kernel: [3, 3],
            stride: [2, 2],
            dilation,
            pad_before: [1, 1],
        };
        let w: Vec<f32> = (0..o * c * 9)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let bias: Vec<f32> = (0..o).map(|i| i as f32 * 0.5 - 1.0).collect();
        let x: Vec<f32> = (0..n * ih * iw * c)
            .map(|i| ((i * 17 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let op = GemmConv::windowed(
            &w,
            o,
            c,
            Some(window.clone()),
            bias.clone(),
            f32::NEG_INFINITY,
            f32::INFINITY,
        )
        .unwrap();
        let input = Tensor::from_shape(&[n, ih, iw, c], &x).unwrap();
        let out = op
            .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
            .unwrap();
        let [oh, ow] = window.output;
        assert_eq!(out[0].shape(), &[n, oh, ow, o]);
        let y = out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for oc in 0..o {
                        let mut want = bias[oc];
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy * 2 + ky * dilation[0]) as isize - 1;
                                let ix = (ox * 2 + kx * dilation[1]) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                for ic in 0..c {
                                    want += x[((b * ih + iy) * iw + ix) * c + ic]
                                        * w[((oc * c + ic) * 3 + ky) * 3 + kx];
                                }
                            }
                        }
                        let got = y[((b * oh + oy) * ow + ox) * o + oc];
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{c} -> {o} channels, batch {b} ({oy}, {ox}) channel {oc}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// `interior_columns` is exactly the set of columns whose window is clear of the padding,
    /// for widths, kernels, strides, dilations and paddings around the models' own.
    #[test]
    fn interior_columns_are_the_columns_clear_of_the_padding() {
        for iw in 1..12 {
            for (k, stride, dilation, pad) in window_shapes() {
                let ow = (iw + 2 * pad).saturating_sub((k - 1) * dilation + 1) / stride + 1;
                let window = Window {
                    input: [1, iw],
                    output: [1, ow],
                    kernel: [1, k],
                    stride: [1, stride],
                    dilation: [1, dilation],
                    pad_before: [0, pad],
                };
                let want: Vec<usize> = (0..ow)
                    .filter(|&ox| {
                        (0..k).all(|kx| {
                            (ox * stride + kx * dilation)
                                .checked_sub(pad)
                                .is_some_and(|ix| ix < iw)
                        })
                    })
                    .collect();
                let got: Vec<usize> = window.interior_columns().collect();
                assert_eq!(got, want, "{window:?}");
            }
        }
    }

    /// (kernel, stride, dilation, padding) combinations for the test above.
    fn window_shapes() -> Vec<(usize, usize, usize, usize)> {
        let mut all = Vec::new();
        for k in 1..4 {
            for stride in 1..4 {
                for dilation in 1..3 {
                    for pad in 0..3 {
                        all.push((k, stride, dilation, pad));
                    }
                }
            }
        }
        all
    }

    #[test]
    fn wrong_input_size_is_an_error() {
        let window = Window {
            input: [4, 4],
            output: [2, 2],
            kernel: [3, 3],
            stride: [2, 2],
            dilation: [1, 1],
            pad_before: [1, 1],
        };
        let op = GemmConv::windowed(&[1.0; 9], 1, 1, Some(window), vec![0.0], f32::MIN, f32::MAX)
            .unwrap();
        let input = Tensor::from_shape(&[1, 5, 4, 1], &[0f32; 20]).unwrap();
        assert!(
            op.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                .is_err()
        );
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let op = GemmConv::pointwise(&[1.0; 6], 2, 3, vec![0.0; 2], f32::MIN, f32::MAX).unwrap();
        let input = Tensor::from_shape(&[1, 4], &[0f32; 4]).unwrap();
        assert!(
            op.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                .is_err()
        );
    }
}
