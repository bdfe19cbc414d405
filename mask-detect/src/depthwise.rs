//! Depthwise convolutions run channel-last, vectorised over channels.
//!
//! MobileNet-style models follow each 1x1 expansion with a depthwise 3x3 convolution: every
//! channel convolved with its own kernel. [`Depthwise`] computes an output row at a time. For
//! the pixels whose window lies inside the image and a channel count that is a multiple of 16,
//! it goes channel block by channel block (16 channels, one AVX-512 register): the block's nine
//! weight vectors stay in registers across the whole row, and the products go into three
//! accumulators, so that the fused multiply-adds form three short dependency chains rather than
//! one of nine, which the core overlaps (PERFORMANCE.md, "Design decisions"). The
//! pixels at the left and right edges, and other channel counts, go pixel by pixel over the taps
//! that fall inside the image (the padding contributes nothing, so it is skipped rather than
//! materialised). The bias and the activation that follow (ReLU, ReLU6) are applied before a
//! pixel is stored, so they cost no extra pass over the tensor.
//!
//! Fusion with its neighbours keeps the largest tensors of both models in cache instead of
//! writing them out and reading them back:
//! - [`ExpandDepthwiseProject`], a whole MobileNetV2 block but its residual add: the 1x1
//!   expansion computed row by row into a ring of as many rows as the kernel is high, the
//!   depthwise convolution over that ring, the 1x1 projection of each band of its output. For
//!   small images (the expanded image within 512 KiB) the three steps run over the whole image
//!   instead. Its "expansion" may also be the models' 3x3 stem, computed row by row;
//! - [`DepthwisePointwise`], for a depthwise convolution preceded by neither: the depthwise
//!   output computed band by band and projected while in cache.
//!
//! [`crate::rewrite`] puts the fused ops into tract's models.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::internal::ensure;

use crate::gemm_conv::{GemmConv, Window, clamp};
use crate::kernel_op::{Kernel, LANES, Params, lanes, same_bits, store_sum, tract_op};

/// Bytes of depthwise output computed per band before the 1x1 convolution consumes it: the band
/// and its slice of the output stay in a 512 KiB L2 cache.
const BAND_BYTES: usize = 192 * 1024;

/// Largest expanded image (bytes of f32 activations, one image of the batch) for which
/// [`ExpandDepthwiseProject`] runs its three steps over the whole image rather than row by row:
/// the expanded image and the depthwise output then stay in a 1 MiB L2 cache.
const WHOLE_BYTES: usize = 512 * 1024;

/// Windows larger than this many taps are left to tract.
pub(crate) const MAX_TAPS: usize = 49;

/// A depthwise convolution over a channel-last input `[batch, height, width, channels]`, with
/// its bias and a clamp fused in:
/// `y[b, oy, ox, c] = clamp(bias[c] + sum_taps x[b, iy, ix, c] * w[tap, c], lo, hi)`.
#[derive(Debug, Clone)]
pub(crate) struct Depthwise {
    /// Weights, `taps x channels`, row-major; taps in (kernel row, kernel column) order.
    weights: Params,
    /// One bias per channel.
    bias: Params,
    channels: usize,
    window: Window,
    /// Lower clamp bound (`-inf` for none).
    lo: f32,
    /// Upper clamp bound (`+inf` for none).
    hi: f32,
}

impl PartialEq for Depthwise {
    fn eq(&self, other: &Self) -> bool {
        self.channels == other.channels
            && self.window == other.window
            && same_bits(&[self.lo, self.hi], &[other.lo, other.hi])
            && same_bits(&self.weights, &other.weights)
            && same_bits(&self.bias, &other.bias)
    }
}

impl Eq for Depthwise {}

impl Depthwise {
    /// Build the op from weights in ONNX order (`channels x 1 x kernel height x kernel width`).
    pub(crate) fn new(
        weights_c1hw: &[f32],
        channels: usize,
        window: Window,
        bias: Vec<f32>,
        lo: f32,
        hi: f32,
    ) -> TractResult<Depthwise> {
        let taps = window.kernel[0] * window.kernel[1];
        ensure!(
            weights_c1hw.len() == channels * taps && bias.len() == channels,
            "depthwise convolution: {} weights and {} biases for {channels} channels x {taps} taps",
            weights_c1hw.len(),
            bias.len()
        );
        ensure!(
            (1..=MAX_TAPS).contains(&taps)
                && window.output.iter().all(|&d| d > 0)
                && window.stride.iter().chain(&window.dilation).all(|&d| d > 0),
            "depthwise convolution: unsupported window {window:?}"
        );
        let mut weights = vec![0f32; weights_c1hw.len()];
        for c in 0..channels {
            for t in 0..taps {
                weights[t * channels + c] = weights_c1hw[c * taps + t];
            }
        }
        Ok(Depthwise {
            weights: Params::new(&weights),
            bias: Params::new(&bias),
            channels,
            window,
            lo,
            hi,
        })
    }

    /// Compute output rows `rows` of image `batch` into `y` (`rows x out_width x channels`).
    pub(crate) fn compute_rows(
        &self,
        x: &[f32],
        batch: usize,
        rows: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        let [ih, iw] = self.window.input;
        let line = iw * self.channels;
        let mut in_rows: Vec<Option<&[f32]>> = vec![None; self.window.kernel[0]];
        for (oy, out) in rows.zip(y.chunks_exact_mut(self.window.output[1] * self.channels)) {
            for (ky, row) in in_rows.iter_mut().enumerate() {
                *row = self
                    .input_row(oy, ky)
                    .and_then(|iy| x.get((batch * ih + iy) * line..(batch * ih + iy + 1) * line));
            }
            self.compute_row(&in_rows, out);
        }
    }

    /// The input row under kernel row `ky` for output row `oy`, `None` in the padding.
    pub(crate) fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        self.window.input_index(0, oy, ky)
    }

    /// Compute one output row (`out_width x channels`) from the input rows under each kernel
    /// row (`in_width x channels` each, `None` for padding rows).
    pub(crate) fn compute_row(&self, in_rows: &[Option<&[f32]>], out: &mut [f32]) {
        let c = self.channels;
        let w = &self.window;
        let [_, kw] = w.kernel;
        // (weights offset, input row, offset relative to the window's first column) of each tap
        // inside the image vertically: the same for every pixel whose window lies inside the
        // image horizontally.
        let mut row_taps: [(usize, &[f32], usize); MAX_TAPS] = [(0, &[], 0); MAX_TAPS];
        let mut row_count = 0;
        for (ky, row) in in_rows.iter().enumerate() {
            let Some(row) = row else { continue };
            for kx in 0..kw {
                if let Some(tap) = row_taps.get_mut(row_count) {
                    *tap = ((ky * kw + kx) * c, row, kx * w.dilation[1] * c);
                    row_count += 1;
                }
            }
        }
        // Output columns whose window lies inside the image horizontally: the row kernel where
        // it applies, pixel by pixel otherwise; the columns at the edges pixel by pixel.
        let interior = w.interior_columns();
        let done = !interior.is_empty()
            && c.is_multiple_of(LANES)
            && match row_count {
                9 => self.interior::<9>(&row_taps, interior.clone(), out),
                6 => self.interior::<6>(&row_taps, interior.clone(), out),
                3 => self.interior::<3>(&row_taps, interior.clone(), out),
                _ => false,
            };
        for (ox, out) in out.chunks_exact_mut(c).enumerate() {
            if !interior.contains(&ox) {
                self.edge_pixel(in_rows, ox, out);
            } else if !done {
                let ix0 = (ox * w.stride[1]).saturating_sub(w.pad_before[1]);
                self.pixel(&row_taps[..row_count], ix0 * c, out);
            }
        }
    }

    /// Output columns `oxs` of a row whose window lies inside the image, from the `T` taps of
    /// `taps` (weights offset, input row, offset relative to the window's first column), for a
    /// channel count that is a multiple of `LANES`. Channel block by channel block, so that the
    /// block's `T` weight vectors stay in registers across the whole row. False (nothing
    /// written) when `taps` holds fewer than `T` taps.
    fn interior<const T: usize>(
        &self,
        taps: &[(usize, &[f32], usize)],
        oxs: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> bool {
        let Some(taps) = taps.get(..T) else {
            return false;
        };
        let c = self.channels;
        let (stride, pad) = (self.window.stride[1], self.window.pad_before[1]);
        let (lo, hi) = (self.lo, self.hi);
        for cb in (0..c).step_by(LANES) {
            let weights: [[f32; LANES]; T] =
                std::array::from_fn(|t| lanes(&self.weights, taps[t].0 + cb));
            let bias = lanes(&self.bias, cb);
            for ox in oxs.clone() {
                let shift = (ox * stride - pad) * c + cb;
                // Three accumulators, so that the multiply-adds form three dependency chains.
                let mut sums = [[0f32; LANES]; 3];
                for (t, (&(_, row, xo), w)) in taps.iter().zip(&weights).enumerate() {
                    let xs = lanes(row, xo + shift);
                    let sum = &mut sums[t % 3];
                    for j in 0..LANES {
                        sum[j] = xs[j].mul_add(w[j], sum[j]);
                    }
                }
                store_sum(out, ox * c + cb, bias, &sums, lo, hi);
            }
        }
        true
    }

    /// Output column `ox` of a row (`channels` values), for a pixel near the left or right edge.
    fn edge_pixel(&self, in_rows: &[Option<&[f32]>], ox: usize, out: &mut [f32]) {
        let c = self.channels;
        let kw = self.window.kernel[1];
        let mut taps: [(usize, &[f32], usize); MAX_TAPS] = [(0, &[], 0); MAX_TAPS];
        let mut count = 0;
        for (ky, row) in in_rows.iter().enumerate() {
            let Some(row) = row else { continue };
            for kx in 0..kw {
                if let Some(ix) = self.window.input_index(1, ox, kx)
                    && let Some(tap) = taps.get_mut(count)
                {
                    *tap = ((ky * kw + kx) * c, row, ix * c);
                    count += 1;
                }
            }
        }
        self.pixel(&taps[..count], 0, out);
    }

    /// One output pixel (`channels` values) from its taps: (weights offset, input row, offset
    /// in the row, to which `shift` is added).
    #[inline(always)]
    fn pixel(&self, taps: &[(usize, &[f32], usize)], shift: usize, out: &mut [f32]) {
        let c = self.channels;
        let (lo, hi) = (self.lo, self.hi);
        let blocks = c / LANES * LANES;
        // LANES channels at a time in a fixed-size accumulator, which the compiler keeps in
        // vector registers across the taps.
        for cb in (0..blocks).step_by(LANES) {
            let mut acc: [f32; LANES] = lanes(&self.bias, cb);
            for &(wo, row, xo) in taps {
                let xs: [f32; LANES] = lanes(row, xo + shift + cb);
                let ws: [f32; LANES] = lanes(&self.weights, wo + cb);
                for j in 0..LANES {
                    acc[j] += xs[j] * ws[j];
                }
            }
            for (o, a) in out[cb..cb + LANES].iter_mut().zip(acc) {
                *o = clamp(a, lo, hi);
            }
        }
        for (ch, o) in out.iter_mut().enumerate().skip(blocks) {
            let mut a = self.bias[ch];
            for &(wo, row, xo) in taps {
                a += row.get(xo + shift + ch).copied().unwrap_or(0.0) * self.weights[wo + ch];
            }
            *o = clamp(a, lo, hi);
        }
    }
}

impl Kernel for Depthwise {
    const NAME: &'static str = "Depthwise";

    fn describe(&self) -> Vec<String> {
        let w = &self.window;
        vec![format!(
            "{}x{} stride {:?} dilation {:?}, {} channels, clamp [{}, {}]",
            w.kernel[0], w.kernel[1], w.stride, w.dilation, self.channels, self.lo, self.hi
        )]
    }

    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>> {
        let w = &self.window;
        ensure!(
            input.len() == 4
                && input[1] == w.input[0].into()
                && input[2] == w.input[1].into()
                && input[3] == self.channels.into(),
            "depthwise convolution expects [batch, {}, {}, {}], got {input:?}",
            w.input[0],
            w.input[1],
            self.channels
        );
        let mut shape: TVec<D> = input.into();
        shape[1] = w.output[0].into();
        shape[2] = w.output[1].into();
        Ok(shape)
    }

    /// Compute `y` (`[batch, out_height, out_width, channels]`) from `x`
    /// (`[batch, in_height, in_width, channels]`), both row-major.
    fn compute(&self, x: &[f32], y: &mut [f32]) {
        let [oh, ow] = self.window.output;
        for (batch, yb) in y.chunks_exact_mut(oh * ow * self.channels).enumerate() {
            self.compute_rows(x, batch, 0..oh, yb);
        }
    }
}

tract_op!(Depthwise);

/// A depthwise convolution followed by a 1x1 convolution, computed band of output rows by band
/// of output rows: each band of the depthwise output stays in the L2 cache between the two,
/// instead of going through memory as a whole tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DepthwisePointwise {
    depthwise: Depthwise,
    pointwise: GemmConv,
}

impl DepthwisePointwise {
    /// Fuse `depthwise` with `pointwise`, which must take the depthwise output's channels.
    pub(crate) fn new(depthwise: Depthwise, pointwise: GemmConv) -> TractResult<Self> {
        ensure!(
            pointwise.in_channels() == depthwise.channels && pointwise.is_pointwise(),
            "fused convolution: a 1x1 convolution over {} channels cannot follow a depthwise one over {}",
            pointwise.in_channels(),
            depthwise.channels
        );
        Ok(DepthwisePointwise {
            depthwise,
            pointwise,
        })
    }
}

impl Kernel for DepthwisePointwise {
    const NAME: &'static str = "DepthwisePointwise";

    fn describe(&self) -> Vec<String> {
        let mut info = self.depthwise.describe();
        info.extend(self.pointwise.describe());
        info
    }

    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>> {
        let mut shape = self.depthwise.output_shape(input)?;
        shape[3] = self.pointwise.out_channels().into();
        Ok(shape)
    }

    fn compute(&self, x: &[f32], y: &mut [f32]) {
        let [oh, ow] = self.depthwise.window.output;
        let (c, o) = (self.depthwise.channels, self.pointwise.out_channels());
        let band = (BAND_BYTES / 4 / (ow * c)).clamp(1, oh);
        let mut scratch = Vec::new();
        for (batch, yb) in y.chunks_exact_mut(oh * ow * o).enumerate() {
            for (i, yr) in yb.chunks_mut(band * ow * o).enumerate() {
                let first = i * band;
                let rows = yr.len() / (ow * o);
                scratch.resize(rows * ow * c, 0.0);
                self.depthwise
                    .compute_rows(x, batch, first..first + rows, &mut scratch);
                self.pointwise.compute(&scratch, yr);
            }
        }
    }
}

tract_op!(DepthwisePointwise);

/// A MobileNetV2 block without its residual add: a 1x1 expansion, a depthwise convolution over
/// its output, a 1x1 projection of that, computed one output row at a time. The expanded rows
/// live in a ring of as many rows as the depthwise kernel is high, each computed once; the
/// depthwise output row goes straight into the projection. Neither the expanded activations
/// (the largest tensors of both models) nor the depthwise output go through memory.
///
/// The "expansion" may also be a windowed convolution that [`GemmConv::direct_window`] computes
/// row by row: both models' 3x3 stem, whose output (CenterFace's largest tensor, 15.6 MB at
/// 800x608) then never goes through memory either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandDepthwiseProject {
    expand: GemmConv,
    depthwise: Depthwise,
    project: GemmConv,
}

impl ExpandDepthwiseProject {
    /// Chain the three; the channel counts must agree, the projection must be a plain 1x1
    /// convolution, the expansion a plain 1x1 convolution or one computed directly whose output
    /// has the depthwise input's size, and the depthwise one undilated vertically.
    pub(crate) fn new(
        expand: GemmConv,
        depthwise: Depthwise,
        project: GemmConv,
    ) -> TractResult<Self> {
        let expansion_fits = match expand.window() {
            None => true,
            Some(w) => expand.direct_window().is_some() && w.output == depthwise.window.input,
        };
        ensure!(
            expansion_fits
                && project.is_pointwise()
                && expand.out_channels() == depthwise.channels
                && project.in_channels() == depthwise.channels
                && depthwise.window.dilation[0] == 1,
            "fused block: {} -> {} -> {} channels, {:?} after {:?}",
            expand.out_channels(),
            depthwise.channels,
            project.in_channels(),
            depthwise.window,
            expand.window()
        );
        Ok(ExpandDepthwiseProject {
            expand,
            depthwise,
            project,
        })
    }

    /// Height and width of the block's input: the expansion's window input, or the depthwise
    /// input after a 1x1 expansion.
    fn input_size(&self) -> [usize; 2] {
        self.expand
            .window()
            .map_or(self.depthwise.window.input, |w| w.input)
    }

    /// Whether an image's expanded activations fit in `WHOLE_BYTES`, so that the block runs
    /// as three whole-image steps rather than row by row.
    fn whole_image(&self) -> bool {
        let [ih, iw] = self.depthwise.window.input;
        ih * iw * self.depthwise.channels * 4 <= WHOLE_BYTES
    }

    /// Expanded row `iy` of image `batch` (`width x channels`, the depthwise input's row) from
    /// the block's whole input `x`.
    fn expanded_row(&self, x: &[f32], batch: usize, iy: usize, dst: &mut [f32]) {
        if self.expand.is_pointwise() {
            let [ih, iw] = self.depthwise.window.input;
            let line = iw * self.expand.in_channels();
            let at = (batch * ih + iy) * line;
            if let Some(src) = x.get(at..at + line) {
                self.expand.compute(src, dst);
            }
        } else {
            self.expand.compute_row(x, batch, iy, dst);
        }
    }

    /// The block for small images: each of the three steps over the whole image at once, so
    /// that each 1x1 convolution is one matrix product with a row per pixel instead of one
    /// per image row (7 to 14 rows at the classifier's last blocks, too few to amortise a
    /// `gemm` call's set-up and the pass over the weights that each product makes).
    fn compute_whole(&self, x: &[f32], y: &mut [f32]) {
        let dw = &self.depthwise;
        let [xh, xw] = self.input_size();
        let [ih, iw] = dw.window.input;
        let [oh, ow] = dw.window.output;
        let (cin, c, o) = (
            self.expand.in_channels(),
            dw.channels,
            self.project.out_channels(),
        );
        let mut expanded = vec![0f32; ih * iw * c];
        let mut dw_out = vec![0f32; oh * ow * c];
        for (xb, yb) in x
            .chunks_exact(xh * xw * cin)
            .zip(y.chunks_exact_mut(oh * ow * o))
        {
            self.expand.compute(xb, &mut expanded);
            dw.compute_rows(&expanded, 0, 0..oh, &mut dw_out);
            self.project.compute(&dw_out, yb);
        }
    }
}

impl Kernel for ExpandDepthwiseProject {
    const NAME: &'static str = "ExpandDepthwiseProject";

    fn describe(&self) -> Vec<String> {
        let mut info = self.expand.describe();
        info.extend(self.depthwise.describe());
        info.extend(self.project.describe());
        info
    }

    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>> {
        let w = &self.depthwise.window;
        let [xh, xw] = self.input_size();
        ensure!(
            input.len() == 4
                && input[1] == xh.into()
                && input[2] == xw.into()
                && input[3] == self.expand.in_channels().into(),
            "fused block expects [batch, {xh}, {xw}, {}], got {input:?}",
            self.expand.in_channels()
        );
        let mut shape: TVec<D> = input.into();
        shape[1] = w.output[0].into();
        shape[2] = w.output[1].into();
        shape[3] = self.project.out_channels().into();
        Ok(shape)
    }

    fn compute(&self, x: &[f32], y: &mut [f32]) {
        if self.whole_image() {
            self.compute_whole(x, y);
            return;
        }
        let dw = &self.depthwise;
        let [_, iw] = dw.window.input;
        let [oh, ow] = dw.window.output;
        let kh = dw.window.kernel[0];
        let (c, o) = (dw.channels, self.project.out_channels());
        let line = iw * c;
        // Ring slot `iy % kh` holds expanded input row `iy`: the rows one output row needs are
        // consecutive, so they never share a slot.
        let mut ring = vec![0f32; kh * line];
        let mut ring_rows: Vec<Option<usize>> = vec![None; kh];
        // Depthwise output rows are projected a band at a time: one matrix product per band
        // rather than per row.
        let band = (BAND_BYTES / 4 / (ow * c)).clamp(1, oh);
        let mut dw_band = vec![0f32; band * ow * c];
        for (batch, yb) in y.chunks_exact_mut(oh * ow * o).enumerate() {
            ring_rows.fill(None);
            for (b, y_band) in yb.chunks_mut(band * ow * o).enumerate() {
                let rows = y_band.len() / (ow * o);
                for (r, dw_row) in dw_band.chunks_exact_mut(ow * c).take(rows).enumerate() {
                    let oy = b * band + r;
                    for ky in 0..kh {
                        let Some(iy) = dw.input_row(oy, ky) else {
                            continue;
                        };
                        let slot = iy % kh;
                        if ring_rows[slot] != Some(iy)
                            && let Some(dst) = ring.get_mut(slot * line..(slot + 1) * line)
                        {
                            self.expanded_row(x, batch, iy, dst);
                            ring_rows[slot] = Some(iy);
                        }
                    }
                    let mut in_rows: [Option<&[f32]>; MAX_TAPS] = [None; MAX_TAPS];
                    for (ky, row) in in_rows.iter_mut().enumerate().take(kh) {
                        *row = dw
                            .input_row(oy, ky)
                            .and_then(|iy| ring.get(iy % kh * line..(iy % kh + 1) * line));
                    }
                    dw.compute_row(&in_rows[..kh], dw_row);
                }
                self.project.compute(&dw_band[..rows * ow * c], y_band);
            }
        }
    }
}

tract_op!(ExpandDepthwiseProject);

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::internal::{EvalContext, EvalOp};

    /// Against a direct evaluation of the definition: padding, stride, dilation, a batch of 2,
    /// and 37 channels (two full blocks of 16 and a remainder of 5), which takes the per-pixel
    /// path everywhere.
    #[test]
    fn depthwise_matches_the_definition() {
        check_against_definition(37, [23, 31], [12, 14], [2, 2], [1, 2]);
    }

    /// Channel counts that are multiples of 16 take the row kernel for interior pixels (all nine
    /// taps, six at the top and bottom rows, three for a one-row image), the per-pixel path at
    /// the left and right edges.
    #[test]
    fn depthwise_row_kernel_matches_the_definition() {
        check_against_definition(48, [9, 13], [9, 13], [1, 1], [1, 1]);
        check_against_definition(32, [23, 31], [12, 16], [2, 2], [1, 1]);
        check_against_definition(16, [1, 20], [1, 20], [1, 1], [1, 1]);
        check_against_definition(64, [6, 11], [6, 11], [1, 1], [1, 2]);
    }

    /// A 3x3 depthwise convolution with padding 1 on a batch of 2, against the definition.
    fn check_against_definition(
        c: usize,
        input: [usize; 2],
        output: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) {
        let n = 2;
        let [ih, iw] = input;
        let window = Window {
            input,
            output,
            kernel: [3, 3],
            stride,
            dilation,
            pad_before: [1, 1],
        };
        let w: Vec<f32> = (0..c * 9)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.1 - 1.0).collect();
        let x: Vec<f32> = (0..n * ih * iw * c)
            .map(|i| ((i * 17 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let op = Depthwise::new(&w, c, window.clone(), bias.clone(), 0.0, 6.0).unwrap();
        let input = Tensor::from_shape(&[n, ih, iw, c], &x).unwrap();
        let out = op
            .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
            .unwrap();
        let [oh, ow] = window.output;
        assert_eq!(out[0].shape(), &[n, oh, ow, c]);
        let y = out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let mut clamped = 0;
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut want = bias[ch];
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy * stride[0] + ky * dilation[0]) as isize - 1;
                                let ix = (ox * stride[1] + kx * dilation[1]) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                want +=
                                    x[((b * ih + iy) * iw + ix) * c + ch] * w[ch * 9 + ky * 3 + kx];
                            }
                        }
                        let want = want.clamp(0.0, 6.0);
                        clamped += usize::from(want == 0.0 || want == 6.0);
                        let got = y[((b * oh + oy) * ow + ox) * c + ch];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{c} channels, batch {b} ({oy}, {ox}) channel {ch}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        assert!(clamped > 0 && clamped < y.len());
    }

    /// The fused op against the two ops one after the other, with bands that do not divide the
    /// output rows evenly.
    #[test]
    fn fused_matches_the_two_ops_in_turn() {
        let (ih, iw, c, o) = (151, 67, 40, 9);
        let window = Window {
            input: [ih, iw],
            output: [76, 34],
            kernel: [3, 3],
            stride: [2, 2],
            dilation: [1, 1],
            pad_before: [1, 1],
        };
        let dw_w: Vec<f32> = (0..c * 9)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let pw_w: Vec<f32> = (0..o * c)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let x: Vec<f32> = (0..ih * iw * c)
            .map(|i| ((i * 17 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let dw = Depthwise::new(&dw_w, c, window, vec![0.5; c], 0.0, 6.0).unwrap();
        let pw = GemmConv::pointwise(&pw_w, o, c, vec![-0.25; o], f32::NEG_INFINITY, 1.0).unwrap();
        let fused = DepthwisePointwise::new(dw.clone(), pw.clone()).unwrap();
        let input = || {
            tvec!(
                Tensor::from_shape(&[1, ih, iw, c], &x)
                    .unwrap()
                    .into_tvalue()
            )
        };
        let ctx = EvalContext::out_of_plan();
        let mid = dw.eval(&ctx, input()).unwrap();
        let want = pw.eval(&ctx, mid).unwrap();
        let got = fused.eval(&ctx, input()).unwrap();
        assert_eq!(got[0].shape(), &[1, 76, 34, o]);
        assert_eq!(got[0].shape(), want[0].shape());
        let got = got[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let want = want[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-4, "element {i}: {g} vs {w}");
        }
        assert!(want.contains(&1.0) && want.iter().any(|&v| v < 1.0));
    }

    /// The fused block against the three ops one after the other: stride 1 and 2, a batch of 2.
    #[test]
    fn block_matches_the_three_ops_in_turn() {
        // Small enough to run over the whole image at once, and large enough to run row by row.
        check_block(2, [29, 23], [5, 20, 7], false, true);
        check_block(2, [91, 75], [5, 20, 7], false, false);
    }

    /// The same with a 3x3 stride-2 convolution over 3 channels (computed directly) as the
    /// "expansion", as both models' stems.
    #[test]
    fn stem_block_matches_the_three_ops_in_turn() {
        check_block(2, [19, 15], [3, 16, 7], true, true);
        check_block(1, [100, 90], [3, 16, 7], true, false);
    }

    /// The fused block against its three ops in turn, with a depthwise stride of 1 and 2, for
    /// a depthwise input of `[ih, iw]` and `[cin, c, o]` channels; the expansion is a 3x3
    /// stride-2 convolution over an input of `[2 ih - 1, 2 iw - 1]` if `stem`, 1x1 otherwise;
    /// `whole` says which of the block's two paths the sizes take.
    fn check_block(
        n: usize,
        [ih, iw]: [usize; 2],
        [cin, c, o]: [usize; 3],
        stem: bool,
        whole: bool,
    ) {
        let (xh, xw) = if stem {
            (2 * ih - 1, 2 * iw - 1)
        } else {
            (ih, iw)
        };
        for stride in [1, 2] {
            let out = [(ih - 1) / stride + 1, (iw - 1) / stride + 1];
            let window = Window {
                input: [ih, iw],
                output: out,
                kernel: [3, 3],
                stride: [stride, stride],
                dilation: [1, 1],
                pad_before: [1, 1],
            };
            let taps = if stem { 9 } else { 1 };
            let ex_w: Vec<f32> = (0..c * cin * taps)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 6.0)
                .collect();
            let dw_w: Vec<f32> = (0..c * 9)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let pw_w: Vec<f32> = (0..o * c)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
                .collect();
            let x: Vec<f32> = (0..n * xh * xw * cin)
                .map(|i| ((i * 17 % 29) as f32 - 14.0) / 5.0)
                .collect();
            let stem_window = stem.then_some(Window {
                input: [xh, xw],
                output: [ih, iw],
                kernel: [3, 3],
                stride: [2, 2],
                dilation: [1, 1],
                pad_before: [1, 1],
            });
            let ex =
                GemmConv::windowed(&ex_w, c, cin, stem_window, vec![0.1; c], 0.0, 6.0).unwrap();
            let dw = Depthwise::new(&dw_w, c, window, vec![0.5; c], 0.0, 6.0).unwrap();
            let pw =
                GemmConv::pointwise(&pw_w, o, c, vec![-0.25; o], f32::NEG_INFINITY, 3.0).unwrap();
            let fused = ExpandDepthwiseProject::new(ex.clone(), dw.clone(), pw.clone()).unwrap();
            assert_eq!(fused.whole_image(), whole);
            let input = || {
                tvec!(
                    Tensor::from_shape(&[n, xh, xw, cin], &x)
                        .unwrap()
                        .into_tvalue()
                )
            };
            let ctx = EvalContext::out_of_plan();
            let want = pw
                .eval(
                    &ctx,
                    dw.eval(&ctx, ex.eval(&ctx, input()).unwrap()).unwrap(),
                )
                .unwrap();
            let got = fused.eval(&ctx, input()).unwrap();
            assert_eq!(got[0].shape(), &[n, out[0], out[1], o]);
            assert_eq!(got[0].shape(), want[0].shape());
            let got = got[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec();
            let want = want[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-3,
                    "stride {stride} element {i}: {g} vs {w}"
                );
            }
            assert!(want.contains(&3.0) && want.iter().any(|&v| v < 3.0));
        }
    }

    #[test]
    fn wrong_shape_is_an_error() {
        let window = Window {
            input: [4, 4],
            output: [4, 4],
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pad_before: [1, 1],
        };
        let op = Depthwise::new(&[1.0; 18], 2, window, vec![0.0; 2], f32::MIN, f32::MAX).unwrap();
        let input = Tensor::from_shape(&[1, 4, 4, 3], &[0f32; 48]).unwrap();
        assert!(
            op.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                .is_err()
        );
    }
}
