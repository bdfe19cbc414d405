//! Put this crate's convolution ops ([`GemmConv`], [`DepthwisePointwise`],
//! [`ExpandDepthwiseProject`]) into a decluttered tract model.
//!
//! tract's declutter pass leaves three kinds of convolution in both models: 1x1 convolutions as
//! einsums (`IHW,OI->OHW` and batch variants), depthwise convolutions and a few dense ones as
//! `Conv` ops, channel-first. [`rewrite`] replaces them with channel-last ops of this crate,
//! fusing into each the bias `Add` and the `Max`/`Min`-by-a-constant (ReLU, ReLU6) that follow
//! it, and wires tract `MoveAxis` ops around it to go from channel-first to channel-last and back:
//! - a 1x1 expansion, the depthwise convolution over its output and the 1x1 projection after that
//!   (a MobileNetV2 block but its residual add) become one [`ExpandDepthwiseProject`];
//! - so do a small windowed convolution that [`GemmConv`] computes directly (both models' 3x3
//!   stem over the RGB input), the depthwise convolution over its output and the 1x1 projection
//!   after that, the stem standing in for the expansion;
//! - a depthwise convolution followed by a 1x1 one, without an expansion before, becomes a
//!   [`DepthwisePointwise`];
//! - any other 1x1 or dense convolution becomes a [`GemmConv`].
//!
//! tract's optimiser then cancels each `MoveAxis` against its inverse on the next op, so the
//! activations stay channel-last from one convolution to the next, and optimises what is left
//! (residual adds, upsampling, pooling) as usual. A convolution none of these patterns covers
//! (a depthwise one not followed by a 1x1 one, a grouped one, a quantised one, symbolic shapes)
//! is left to tract, and moved channel-last by its `conv_nhwc` transform afterwards (`plan.rs`).
//!
//! Why fuse: a depthwise convolution on its own is bound by memory traffic (ours alone is no
//! faster than tract's). Fused with the projection after it, and then with the expansion before
//! it, a block's expanded activations never go through memory, which is what makes CenterFace's
//! high-resolution blocks faster; the classifier's activations are small enough to stay in cache
//! either way (PERFORMANCE.md, "Design decisions").

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxisOp, TypedModelPatch, ensure};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Max, Min};
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::depthwise::{self, Depthwise, DepthwisePointwise, ExpandDepthwiseProject};
use crate::gemm_conv::{GemmConv, Window};

/// Rewrite every convolution of `model` (a decluttered model) that this crate's ops cover; see the
/// module documentation.
pub(crate) fn rewrite(mut model: TypedModel) -> TractResult<TypedModel> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let patch = if let Some(conv) = node.op_as::<Conv>() {
            conv_patch(&model, node, conv)?
        } else if node.op_is::<EinSum>() {
            einsum_patch(&model, node)?
        } else {
            None
        };
        if let Some(patch) = patch {
            patch.apply(&mut model)?;
        }
    }
    model.into_compact()
}

/// The bias and clamp that follow a convolution in the model, folded into one op.
struct Epilogue {
    /// Added to each output channel.
    bias: Vec<f32>,
    lo: f32,
    hi: f32,
    /// The last outlet folded in: what the replacement's output stands for.
    last: OutletId,
}

/// Follow the single-consumer chain after `start`, a convolution output with `channels` channels
/// on `channel_axis`: any per-channel `Add`s of constants, then `Max`/`Min` by scalar constants.
fn epilogue(
    model: &TypedModel,
    start: OutletId,
    channels: usize,
    channel_axis: usize,
) -> TractResult<Epilogue> {
    let shape = model.outlet_fact(start)?.shape.clone();
    let rank = shape.rank();
    let mut e = Epilogue {
        bias: vec![0f32; channels],
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
        last: start,
    };
    let mut clamped = false;
    loop {
        if model.output_outlets()?.contains(&e.last) {
            break;
        }
        let [succ] = model.outlet_successors(e.last) else {
            break;
        };
        let next = model.node(succ.node);
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            break;
        };
        let Some(k) = constant_operand(model, next, e.last) else {
            break;
        };
        if next.outputs[0].fact.shape != shape {
            break;
        }
        let Some(v) = values(&k) else { break };
        if bin.0.is::<Add>() && !clamped {
            // A per-channel bias: every dimension 1 except the channel axis.
            let padded: Vec<usize> = std::iter::repeat_n(1, rank.saturating_sub(k.rank()))
                .chain(k.shape().iter().copied())
                .collect();
            let per_channel = padded.len() == rank
                && padded
                    .iter()
                    .enumerate()
                    .all(|(axis, &d)| d == 1 || (axis == channel_axis && d == channels));
            if !per_channel {
                break;
            }
            if v.len() == 1 {
                e.bias.iter_mut().for_each(|b| *b += v[0]);
            } else {
                e.bias.iter_mut().zip(&v).for_each(|(b, x)| *b += x);
            }
        } else if bin.0.is::<Max>() && v.len() == 1 {
            // max(clamp(x, lo, hi), a) == clamp(x, max(lo, a), max(hi, a)); min likewise.
            (e.lo, e.hi) = (e.lo.max(v[0]), e.hi.max(v[0]));
            clamped = true;
        } else if bin.0.is::<Min>() && v.len() == 1 {
            (e.lo, e.hi) = (e.lo.min(v[0]), e.hi.min(v[0]));
            clamped = true;
        } else {
            break;
        }
        e.last = OutletId::new(succ.node, 0);
    }
    Ok(e)
}

/// The constant operand of a binary node whose other operand is `from`, if it is f32.
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

/// Wire `before`, `op`, `after` from `data` and make the result replace `last` in `model`.
fn replacement(
    model: &TypedModel,
    name: &str,
    data: OutletId,
    before: &[AxisOp],
    op: Box<dyn TypedOp>,
    after: &[AxisOp],
    last: OutletId,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::new(format!("channel-last {name}"));
    let mut wire = patch.tap_model(model, data)?;
    for (i, axis_op) in before.iter().enumerate() {
        wire = patch.wire_node(format!("{name}.cl_in{i}"), axis_op.clone(), &[wire])?[0];
    }
    wire = patch.wire_node(format!("{name}.cl"), op, &[wire])?[0];
    for (i, axis_op) in after.iter().enumerate() {
        wire = patch.wire_node(format!("{name}.cl_out{i}"), axis_op.clone(), &[wire])?[0];
    }
    ensure!(
        patch.outlet_fact(wire)?.shape == model.outlet_fact(last)?.shape,
        "channel-last rewrite of {name} changed its output shape"
    );
    patch.shunt_outside(model, last, wire)?;
    Ok(patch)
}

/// Axis moves from tract's einsum layouts for 1x1 convolutions to channel-last (`before`) and
/// back (`after`), and whether the input has a batch axis that must be 1 (the einsum drops it).
fn einsum_layout(expr: &str) -> Option<(Vec<AxisOp>, Vec<AxisOp>, bool)> {
    use AxisOp::{Add, Move, Rm};
    Some(match expr {
        "IHW,OI->OHW" => (vec![Move(0, 2)], vec![Move(2, 0)], false),
        "NIHW,OI->NOHW" => (vec![Move(1, 3)], vec![Move(3, 1)], false),
        // One output channel (CenterFace's heatmap): the weights are a vector, the output
        // channel axis is added by the einsum.
        "NIHW,I->NOHW" => (vec![Move(1, 3)], vec![Move(3, 1)], false),
        "NIHW,OI->OHW" => (vec![Move(1, 3)], vec![Rm(0), Move(2, 0)], true),
        "IHW,OI->NOHW" => (vec![Move(0, 2)], vec![Move(2, 0), Add(0)], false),
        _ => return None,
    })
}

/// One of tract's 1x1-convolution einsums as a [`GemmConv`] (its bias and clamp fused).
struct Pointwise {
    op: GemmConv,
    /// Moves from the einsum's input layout to channel-last, and from channel-last to the
    /// einsum's output layout.
    before: Vec<AxisOp>,
    after: Vec<AxisOp>,
    /// The einsum's activation input.
    data: OutletId,
    /// The last outlet the op stands for (the einsum's or its epilogue's).
    last: OutletId,
    /// Whether the einsum's output has a batch axis.
    batched_output: bool,
}

/// The [`Pointwise`] for `node`, if it is one of tract's 1x1-convolution einsums with constant
/// f32 weights and a concrete input shape.
fn pointwise(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Pointwise>> {
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    let expr = einsum.axes.to_string();
    let Some((before, after, batch_must_be_one)) = einsum_layout(&expr) else {
        return Ok(None);
    };
    let [data, weights] = node.inputs.as_slice() else {
        return Ok(None);
    };
    let data_fact = model.outlet_fact(*data)?;
    let Some(data_shape) = data_fact.shape.as_concrete() else {
        return Ok(None);
    };
    if data_fact.datum_type != f32::datum_type() || (batch_must_be_one && data_shape[0] != 1) {
        return Ok(None);
    }
    let Some(konst) = model.outlet_fact(*weights)?.konst.clone() else {
        return Ok(None);
    };
    let (out_channels, in_channels) = match konst.shape() {
        _ if konst.datum_type() != f32::datum_type() => return Ok(None),
        [o, i] => (*o, *i),
        [i] if expr == "NIHW,I->NOHW" => (1, *i),
        _ => return Ok(None),
    };
    let Some(weights_oi) = values(&konst) else {
        return Ok(None);
    };
    // Every layout above puts the output channels first, after the batch axis if any.
    let batched_output = node.outputs[0].fact.rank() == 4;
    let e = epilogue(
        model,
        OutletId::new(node.id, 0),
        out_channels,
        usize::from(batched_output),
    )?;
    Ok(Some(Pointwise {
        op: GemmConv::pointwise(&weights_oi, out_channels, in_channels, e.bias, e.lo, e.hi)?,
        before,
        after,
        data: *data,
        last: e.last,
        batched_output,
    }))
}

/// A [`GemmConv`] for one of tract's 1x1-convolution einsums.
fn einsum_patch(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let Some(p) = pointwise(model, node)? else {
        return Ok(None);
    };
    if let Some(patch) = block_patch(model, node, &p)? {
        return Ok(Some(patch));
    }
    replacement(
        model,
        &node.name,
        p.data,
        &p.before,
        Box::new(p.op),
        &p.after,
        p.last,
    )
    .map(Some)
}

/// One of tract's 2D f32 `Conv` nodes, dense or depthwise, with constant weights and bias and a
/// concrete input shape, described for this crate's ops.
struct ConvInfo {
    /// ONNX order: `out x in x kh x kw` (dense) or `channels x 1 x kh x kw` (depthwise).
    weights: Vec<f32>,
    window: Window,
    depthwise: bool,
    in_channels: usize,
    out_channels: usize,
    /// The bias (the conv's own plus any `Add` after it) and clamp.
    e: Epilogue,
    data: OutletId,
    /// Moves to `[batch, height, width, channels]` and back.
    before: Vec<AxisOp>,
    after: Vec<AxisOp>,
    batch: usize,
}

fn conv_info(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<ConvInfo>> {
    use AxisOp::{Add, Move, Rm};
    let spec = &conv.pool_spec;
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.kernel_shape.len() != 2
    {
        return Ok(None);
    }
    let [data, kernel, bias] = node.inputs.as_slice() else {
        return Ok(None);
    };
    let data_fact = model.outlet_fact(*data)?;
    let Some(shape) = data_fact.shape.as_concrete() else {
        return Ok(None);
    };
    // Moves to [batch, height, width, channels] and back; the channel axis of the original.
    let (before, after, channel_axis) = match (spec.data_format, shape.len()) {
        (DataFormat::NCHW, 4) => (vec![Move(1, 3)], vec![Move(3, 1)], 1),
        (DataFormat::CHW, 3) => (vec![Move(0, 2), Add(0)], vec![Rm(0), Move(2, 0)], 0),
        (DataFormat::NHWC, 4) => (vec![], vec![], 3),
        (DataFormat::HWC, 3) => (vec![Add(0)], vec![Rm(0)], 2),
        _ => return Ok(None),
    };
    let hw = if channel_axis == 0 || channel_axis == 1 {
        &shape[channel_axis + 1..]
    } else {
        &shape[channel_axis - 2..channel_axis]
    };
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(*kernel)?.konst.clone(),
        model.outlet_fact(*bias)?.konst.clone(),
    ) else {
        return Ok(None);
    };
    let (out_channels, in_channels) = (spec.output_channels, spec.input_channels);
    let depthwise = conv.group != 1;
    if depthwise && (conv.group != in_channels || out_channels != in_channels) {
        return Ok(None);
    }
    let kernel_in = if depthwise { 1 } else { in_channels };
    if data_fact.datum_type != f32::datum_type()
        || shape[channel_axis] != in_channels
        || spec.kernel_shape[0] * spec.kernel_shape[1] > depthwise::MAX_TAPS
        || kernel.datum_type() != f32::datum_type()
        || bias.datum_type() != f32::datum_type()
        || kernel.shape()
            != [
                out_channels,
                kernel_in,
                spec.kernel_shape[0],
                spec.kernel_shape[1],
            ]
    {
        return Ok(None);
    }
    let (Some(weights), Some(conv_bias)) = (values(&kernel), values(&bias)) else {
        return Ok(None);
    };
    let padding = spec.computed_padding(hw);
    let window = Window {
        input: [hw[0], hw[1]],
        output: [padding[0].convoluted, padding[1].convoluted],
        kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
        stride: [spec.stride(0), spec.stride(1)],
        dilation: [spec.dilation(0), spec.dilation(1)],
        pad_before: [padding[0].pad_before, padding[1].pad_before],
    };
    let mut e = epilogue(model, OutletId::new(node.id, 0), out_channels, channel_axis)?;
    match conv_bias.len() {
        1 => e.bias.iter_mut().for_each(|b| *b += conv_bias[0]),
        n if n == out_channels => e.bias.iter_mut().zip(&conv_bias).for_each(|(b, x)| *b += x),
        _ => return Ok(None),
    }
    Ok(Some(ConvInfo {
        weights,
        window,
        depthwise,
        in_channels,
        out_channels,
        e,
        data: *data,
        before,
        after,
        batch: if shape.len() == 4 { shape[0] } else { 1 },
    }))
}

impl ConvInfo {
    /// The [`Depthwise`] op of a depthwise convolution, its epilogue fused.
    fn depthwise_op(&self) -> TractResult<Depthwise> {
        Depthwise::new(
            &self.weights,
            self.in_channels,
            self.window.clone(),
            self.e.bias.clone(),
            self.e.lo,
            self.e.hi,
        )
    }
}

/// A windowed [`GemmConv`] for a dense `Conv` node, or a [`DepthwisePointwise`] for a depthwise
/// one followed by a 1x1 convolution (see [`conv_info`] for what is taken).
fn conv_patch(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(info) = conv_info(model, node, conv)? else {
        return Ok(None);
    };
    if info.depthwise {
        return depthwise_patch(model, node, info);
    }
    let op = GemmConv::windowed(
        &info.weights,
        info.out_channels,
        info.in_channels,
        Some(info.window.clone()),
        info.e.bias.clone(),
        info.e.lo,
        info.e.hi,
    )?;
    if op.direct_window().is_some()
        && let Some(patch) = stem_block_patch(model, node, &info, &op)?
    {
        return Ok(Some(patch));
    }
    replacement(
        model,
        &node.name,
        info.data,
        &info.before,
        Box::new(op),
        &info.after,
        info.e.last,
    )
    .map(Some)
}

/// The depthwise convolution (undilated vertically) that alone consumes `outlet`, and the 1x1
/// convolution that alone consumes its output: the tail of a block that [`block_patch`] and
/// [`stem_block_patch`] fuse with what produced `outlet`.
fn depthwise_pointwise_after(
    model: &TypedModel,
    outlet: OutletId,
) -> TractResult<Option<(ConvInfo, Pointwise)>> {
    if model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let [succ] = model.outlet_successors(outlet) else {
        return Ok(None);
    };
    let dw_node = model.node(succ.node);
    let Some(conv) = dw_node.op_as::<Conv>() else {
        return Ok(None);
    };
    let Some(dw) = conv_info(model, dw_node, conv)? else {
        return Ok(None);
    };
    if !dw.depthwise || dw.data != outlet || dw.window.dilation[0] != 1 {
        return Ok(None);
    }
    Ok(next_pointwise(model, dw.e.last)?.map(|project| (dw, project)))
}

/// A convolution computed directly (both models' 3x3 stem), the depthwise convolution that alone
/// consumes it and the 1x1 convolution after that, as one [`ExpandDepthwiseProject`] whose
/// "expansion" is the stem: the stem's output (the largest tensor of both models) never goes
/// through memory. `None` when the stem is not followed by that pair.
fn stem_block_patch(
    model: &TypedModel,
    node: &TypedNode,
    stem: &ConvInfo,
    op: &GemmConv,
) -> TractResult<Option<TypedModelPatch>> {
    let Some((dw, project)) = depthwise_pointwise_after(model, stem.e.last)? else {
        return Ok(None);
    };
    if dw.window.input != stem.window.output || !project.batched_output && stem.batch != 1 {
        return Ok(None);
    }
    let after = pointwise_output_moves(&project);
    let fused = ExpandDepthwiseProject::new(op.clone(), dw.depthwise_op()?, project.op)?;
    replacement(
        model,
        &node.name,
        stem.data,
        &stem.before,
        Box::new(fused),
        &after,
        project.last,
    )
    .map(Some)
}

/// The 1x1 convolution that alone consumes `outlet`, if any.
fn next_pointwise(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Pointwise>> {
    if model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let [succ] = model.outlet_successors(outlet) else {
        return Ok(None);
    };
    Ok(pointwise(model, model.node(succ.node))?.filter(|p| p.data == outlet))
}

/// From `[batch, height, width, channels]` to the layout of a 1x1 convolution's output.
fn pointwise_output_moves(p: &Pointwise) -> Vec<AxisOp> {
    if p.batched_output {
        vec![AxisOp::Move(3, 1)]
    } else {
        vec![AxisOp::Rm(0), AxisOp::Move(2, 0)]
    }
}

/// A depthwise convolution fused with the 1x1 convolution that consumes it, as a
/// [`DepthwisePointwise`]; `None` when no 1x1 convolution follows. On its own, tract's depthwise
/// kernel is as fast as ours (see the module documentation); fused, the depthwise output never
/// goes through memory.
fn depthwise_patch(
    model: &TypedModel,
    node: &TypedNode,
    info: ConvInfo,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(p) = next_pointwise(model, info.e.last)? else {
        return Ok(None);
    };
    if !p.batched_output && info.batch != 1 {
        return Ok(None);
    }
    let after = pointwise_output_moves(&p);
    let fused = DepthwisePointwise::new(info.depthwise_op()?, p.op)?;
    replacement(
        model,
        &node.name,
        info.data,
        &info.before,
        Box::new(fused),
        &after,
        p.last,
    )
    .map(Some)
}

/// A 1x1 expansion, the depthwise convolution that consumes it and the 1x1 projection after
/// that (a MobileNetV2 block without its residual add), as one [`ExpandDepthwiseProject`], so
/// neither the expanded activations nor the depthwise output go through memory.
fn block_patch(
    model: &TypedModel,
    node: &TypedNode,
    expand: &Pointwise,
) -> TractResult<Option<TypedModelPatch>> {
    let Some((info, project)) = depthwise_pointwise_after(model, expand.last)? else {
        return Ok(None);
    };
    // The expansion's input, channel-last with a batch axis.
    let mut before = expand.before.clone();
    let rank = model.outlet_fact(expand.data)?.rank();
    if rank == 3 {
        before.push(AxisOp::Add(0));
    }
    let batch = match model.outlet_fact(expand.data)?.shape.as_concrete() {
        Some(shape) if rank == 4 => shape[0],
        Some(_) => 1,
        None => return Ok(None),
    };
    if !project.batched_output && batch != 1 {
        return Ok(None);
    }
    let after = pointwise_output_moves(&project);
    let fused = ExpandDepthwiseProject::new(expand.op.clone(), info.depthwise_op()?, project.op)?;
    replacement(
        model,
        &node.name,
        expand.data,
        &before,
        Box::new(fused),
        &after,
        project.last,
    )
    .map(Some)
}
