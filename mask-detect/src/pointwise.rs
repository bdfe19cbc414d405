//! 1x1 convolutions run channel-last on the `gemm` crate's matrix kernels.
//!
//! Most of both models' arithmetic is in 1x1 ("pointwise") convolutions: matrix products whose
//! inner dimension is the channel count (16 to 960) and whose other dimension is the pixel count
//! (up to 121,600 for CenterFace at 800x608). tract runs them through its own matrix kernels, which
//! pack the activations again before every product; at these shapes they reach about half the
//! throughput of `gemm` (PERFORMANCE.md). This module replaces them, in the decluttered model and
//! before tract's optimiser runs, with [`Pointwise`], an op that keeps the rest of the plan in
//! tract's hands:
//!
//! - the activations are read channel-last (`[.., pixels, channels]`, one row per pixel), so the
//!   product is `rows x in_channels` times `in_channels x out_channels`;
//! - rows are processed in blocks whose output fits in the L2 cache, and the bias and the
//!   activation that follow the convolution in the model (`Add`, then `Max`/`Min` by a constant:
//!   ReLU, ReLU6) are applied to each block while it is still in cache, instead of in extra passes
//!   over the whole tensor.
//!
//! The rewrite wires tract `MoveAxis` ops around each `Pointwise` to go from tract's channel-first
//! einsum to channel-last and back; tract's optimiser then cancels those against the ones that
//! its `conv_nhwc` transform put around the depthwise convolutions, so the activations stay
//! channel-last from one convolution to the next.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::ensure;
use tract_onnx::tract_core::internal::{
    AxisOp, EvalContext, EvalOp, Op, StaticName, TypedModelPatch, TypedOp,
};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Max, Min};

/// Bytes of output computed per block: the block, its input rows and the packed weights stay
/// within a 512 KiB L2 cache while the bias and activation are applied. Chosen with a
/// micro-benchmark over CenterFace's shapes (65 KiB to 1 MiB blocks; 256 KiB was best or within
/// noise of best for every shape).
const BLOCK_BYTES: usize = 256 * 1024;

/// A 1x1 convolution over the last axis, with its bias and a clamp fused in:
/// `y[.., o] = clamp(bias[o] + sum_i x[.., i] * w[i, o], lo, hi)`.
#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    /// Weights, `in_channels x out_channels`, row-major.
    weights: Arc<[f32]>,
    /// One bias per output channel.
    bias: Arc<[f32]>,
    in_channels: usize,
    out_channels: usize,
    /// Lower clamp bound (`-inf` for none).
    lo: f32,
    /// Upper clamp bound (`+inf` for none).
    hi: f32,
}

impl PartialEq for Pointwise {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.in_channels == other.in_channels
            && self.out_channels == other.out_channels
            && self.lo.to_bits() == other.lo.to_bits()
            && self.hi.to_bits() == other.hi.to_bits()
            && bits(&self.weights) == bits(&other.weights)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for Pointwise {}

impl Pointwise {
    /// Build the op from weights in ONNX order (`out_channels x in_channels`, row-major).
    pub(crate) fn new(
        weights_oi: &[f32],
        out_channels: usize,
        in_channels: usize,
        bias: Vec<f32>,
        lo: f32,
        hi: f32,
    ) -> TractResult<Pointwise> {
        ensure!(
            weights_oi.len() == out_channels * in_channels && bias.len() == out_channels,
            "pointwise convolution: {} weights and {} biases for {out_channels}x{in_channels}",
            weights_oi.len(),
            bias.len()
        );
        let mut weights = vec![0f32; weights_oi.len()];
        for o in 0..out_channels {
            for i in 0..in_channels {
                weights[i * out_channels + o] = weights_oi[o * in_channels + i];
            }
        }
        Ok(Pointwise {
            weights: weights.into(),
            bias: bias.into(),
            in_channels,
            out_channels,
            lo,
            hi,
        })
    }

    /// Compute `y` (`rows x out_channels`) from `x` (`rows x in_channels`), both row-major.
    fn compute(&self, x: &[f32], y: &mut [f32]) {
        let (k, n) = (self.in_channels, self.out_channels);
        let rows_per_block = (BLOCK_BYTES / 4 / n).max(8);
        for (xb, yb) in x
            .chunks(rows_per_block * k)
            .zip(y.chunks_mut(rows_per_block * n))
        {
            let rows = yb.len() / n;
            debug_assert_eq!(xb.len(), rows * k);
            // SAFETY: `yb` is rows x n, `xb` rows x k and the weights k x n, all row-major and
            // in bounds (checked by the caller: x.len() == rows * k, y.len() == rows * n); with
            // `read_dst == false` gemm only writes `yb`, every element of it.
            #[allow(unsafe_code)]
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    yb.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    xb.as_ptr(),
                    1,
                    k as isize,
                    self.weights.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in yb.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(self.bias.iter()) {
                    *v = (*v + b).max(self.lo).min(self.hi);
                }
            }
        }
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "Pointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, clamp [{}, {}]",
            self.in_channels, self.out_channels, self.lo, self.hi
        )])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for Pointwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "pointwise convolution takes one input");
        let input = &inputs[0];
        let shape = input.shape();
        ensure!(
            shape.last() == Some(&self.in_channels),
            "pointwise convolution expects {} channels last, got shape {shape:?}",
            self.in_channels
        );
        let mut out_shape: TVec<usize> = shape.into();
        if let Some(last) = out_shape.last_mut() {
            *last = self.out_channels;
        }
        // SAFETY: `compute` writes every element before anything reads the tensor.
        #[allow(unsafe_code)]
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        {
            let view = input.try_as_plain_ram()?;
            let x = view.as_slice::<f32>()?;
            let mut out_view = output.try_as_plain_ram_mut()?;
            let y = out_view.as_slice_mut::<f32>()?;
            ensure!(x.len() / self.in_channels == y.len() / self.out_channels);
            self.compute(x, y);
        }
        Ok(tvec!(output.into_tvalue()))
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl TypedOp for Pointwise {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "pointwise convolution takes one input");
        let fact = inputs[0];
        ensure!(fact.datum_type == f32::datum_type());
        ensure!(fact.shape.last() == Some(&self.in_channels.to_dim()));
        let mut shape: TVec<TDim> = fact.shape.iter().cloned().collect();
        if let Some(last) = shape.last_mut() {
            *last = self.out_channels.to_dim();
        }
        Ok(tvec!(f32::fact(shape)))
    }
}

/// How one of tract's 1x1-convolution einsums lays out its operands, and the axis moves that
/// take it to channel-last and back.
struct Layout {
    /// The input's channel axis, moved last.
    in_channel_axis: usize,
    /// Where the output channel axis goes back to, from last.
    out_channel_axis: usize,
    /// Whether the input has a leading batch axis of size 1 that the output drops.
    drops_batch: bool,
    /// Whether the output gains a leading batch axis of size 1 that the input lacks.
    adds_batch: bool,
}

fn layout(expr: &str) -> Option<Layout> {
    let (in_channel_axis, out_channel_axis, drops_batch, adds_batch) = match expr {
        "IHW,OI->OHW" => (0, 0, false, false),
        "NIHW,OI->NOHW" => (1, 1, false, false),
        "NIHW,OI->OHW" => (1, 0, true, false),
        "IHW,OI->NOHW" => (0, 0, false, true),
        _ => return None,
    };
    Some(Layout {
        in_channel_axis,
        out_channel_axis,
        drops_batch,
        adds_batch,
    })
}

/// The constant operand of a binary node whose other operand is `from`, as f32 values.
fn constant_operand(model: &TypedModel, node: &TypedNode, from: OutletId) -> Option<Arc<Tensor>> {
    let [a, b] = node.inputs.as_slice() else {
        return None;
    };
    let other = if *a == from {
        *b
    } else if *b == from {
        *a
    } else {
        return None;
    };
    let konst = model.outlet_fact(other).ok()?.konst.clone()?;
    (konst.datum_type() == f32::datum_type()).then_some(konst)
}

fn values(t: &Tensor) -> Option<Vec<f32>> {
    Some(t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
}

/// Replace every 1x1 convolution of `model` (a decluttered model) that tract expresses as an
/// einsum with a constant weight matrix by a channel-last [`Pointwise`], fusing the bias and
/// clamps that follow it. Einsums of any other shape are left to tract.
pub(crate) fn rewrite(mut model: TypedModel) -> TractResult<TypedModel> {
    for id in model.eval_order()? {
        if let Some(patch) = patch_for(&model, id)? {
            patch.apply(&mut model)?;
        }
    }
    model.into_compact()
}

fn patch_for(model: &TypedModel, id: usize) -> TractResult<Option<TypedModelPatch>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    let Some(layout) = layout(&einsum.axes.to_string()) else {
        return Ok(None);
    };
    let [data, weights] = node.inputs.as_slice() else {
        return Ok(None);
    };
    let data_fact = model.outlet_fact(*data)?;
    let Some(data_shape) = data_fact.shape.as_concrete() else {
        return Ok(None);
    };
    if data_fact.datum_type != f32::datum_type() || (layout.drops_batch && data_shape[0] != 1) {
        return Ok(None);
    }
    let weights_fact = model.outlet_fact(*weights)?;
    let Some(konst) = weights_fact.konst.clone() else {
        return Ok(None);
    };
    let (out_channels, in_channels) = match konst.shape() {
        [o, i] if konst.datum_type() == f32::datum_type() => (*o, *i),
        _ => return Ok(None),
    };
    let Some(weights_oi) = values(&konst) else {
        return Ok(None);
    };
    let out_rank = node.outputs[0].fact.rank();
    // Every layout above puts the output channels first, after the batch axis if any.
    let out_channel_axis_in_output = usize::from(out_rank == 4);

    // Follow the single-consumer chain: an optional bias Add, then Max/Min by scalars.
    let mut bias = vec![0f32; out_channels];
    let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut last = OutletId::new(id, 0);
    let mut seen_clamp = false;
    let mut seen_bias = false;
    loop {
        if model.output_outlets()?.contains(&last) {
            break;
        }
        let [succ] = model.outlet_successors(last) else {
            break;
        };
        let next = model.node(succ.node);
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            break;
        };
        let Some(k) = constant_operand(model, next, last) else {
            break;
        };
        if next.outputs[0].fact.shape != node.outputs[0].fact.shape {
            break;
        }
        let Some(v) = values(&k) else { break };
        if bin.0.is::<Add>() && !seen_bias && !seen_clamp {
            // A per-channel bias: every dimension 1 except the output channel axis.
            let padded: Vec<usize> = std::iter::repeat_n(1, out_rank.saturating_sub(k.rank()))
                .chain(k.shape().iter().copied())
                .collect();
            let per_channel = padded.len() == out_rank
                && padded.iter().enumerate().all(|(axis, &d)| {
                    d == 1 || (axis == out_channel_axis_in_output && d == out_channels)
                });
            if !per_channel {
                break;
            }
            if v.len() == 1 {
                bias.iter_mut().for_each(|b| *b += v[0]);
            } else {
                bias.iter_mut().zip(&v).for_each(|(b, x)| *b += x);
            }
            seen_bias = true;
        } else if bin.0.is::<Max>() && v.len() == 1 {
            (lo, hi) = (lo.max(v[0]), hi.max(v[0]));
            seen_clamp = true;
        } else if bin.0.is::<Min>() && v.len() == 1 {
            (lo, hi) = (lo.min(v[0]), hi.min(v[0]));
            seen_clamp = true;
        } else {
            break;
        }
        last = OutletId::new(succ.node, 0);
    }

    let op = Pointwise::new(&weights_oi, out_channels, in_channels, bias, lo, hi)?;
    let name = &node.name;
    let mut patch = TypedModelPatch::new(format!("pointwise {name}"));
    let mut wire = patch.tap_model(model, *data)?;
    let rank = data_shape.len();
    if layout.in_channel_axis != rank - 1 {
        wire = patch.wire_node(
            format!("{name}.pw_in"),
            AxisOp::Move(layout.in_channel_axis, rank - 1),
            &[wire],
        )?[0];
    }
    wire = patch.wire_node(format!("{name}.pw"), op, &[wire])?[0];
    if layout.drops_batch {
        wire = patch.wire_node(format!("{name}.pw_rm_n"), AxisOp::Rm(0), &[wire])?[0];
    }
    let rank = patch.outlet_fact(wire)?.rank();
    if layout.out_channel_axis != rank - 1 {
        wire = patch.wire_node(
            format!("{name}.pw_out"),
            AxisOp::Move(rank - 1, layout.out_channel_axis),
            &[wire],
        )?[0];
    }
    if layout.adds_batch {
        wire = patch.wire_node(format!("{name}.pw_add_n"), AxisOp::Add(0), &[wire])?[0];
    }
    ensure!(
        patch.outlet_fact(wire)?.shape == model.outlet_fact(last)?.shape,
        "pointwise rewrite of {name} changed its output shape"
    );
    patch.shunt_outside(model, last, wire)?;
    Ok(Some(patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The op against a direct evaluation of its formula.
    #[test]
    fn pointwise_matches_the_formula() {
        let (rows, k, n) = (1000, 7, 13);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let bias: Vec<f32> = (0..n).map(|o| o as f32 * 0.25 - 1.0).collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 17 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let op = Pointwise::new(&w, n, k, bias.clone(), 0.0, 6.0).unwrap();
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

    #[test]
    fn wrong_channel_count_is_an_error() {
        let op = Pointwise::new(&[1.0; 6], 2, 3, vec![0.0; 2], f32::MIN, f32::MAX).unwrap();
        let input = Tensor::from_shape(&[1, 4], &[0f32; 4]).unwrap();
        assert!(
            op.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                .is_err()
        );
    }
}
