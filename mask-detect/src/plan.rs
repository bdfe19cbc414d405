//! Loading ONNX models into tract and keeping runnable plans per concrete input shape.
//!
//! tract optimises a model for the exact input shape it is given; with symbolic dimensions the
//! convolutions run several times slower. So each distinct shape gets its own optimised plan,
//! kept in a small bounded cache. Plans are immutable and shared between threads: inference
//! never holds the cache lock.
//!
//! Between tract's declutter and optimise passes the convolutions are rewritten channel-last onto
//! this crate's ops, with their bias and activation fused ([`crate::rewrite`]): the dense ones
//! (1x1 and windowed) on the `gemm` crate's matrix kernels ([`crate::gemm_conv`]), each depthwise
//! one together with the 1x1 convolutions around it ([`crate::depthwise`]). Any other is then moved
//! to channel-last by tract's own `conv_nhwc` transform: tract's depthwise kernels vectorise over
//! channels only in that layout, and its channel-first path is scalar for strided depthwise
//! convolutions. Last, the model's input is made channel-last (`channel_last_input`), so a
//! photo's interleaved RGB pixels go into the first convolution as they are. Measured with
//! `benches/src/bin/node_profile.rs` and `benches/compare.py` (PERFORMANCE.md).

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{AxisOp, bail, ensure};

use crate::{Error, Result};

/// A runnable, optimised plan for one input shape.
pub(crate) type Plan = Arc<TypedRunnableModel>;

/// An ONNX model plus the plans made from it so far.
pub(crate) struct PlanCache {
    name: String,
    model: InferenceModel,
    capacity: usize,
    plans: Mutex<VecDeque<(Vec<usize>, Plan)>>,
}

impl PlanCache {
    /// Parse an ONNX model; `name` is used in error messages.
    pub(crate) fn load(name: &str, bytes: &[u8], capacity: usize) -> Result<PlanCache> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(bytes))
            .map_err(|e| invalid(name, &e))?;
        Ok(PlanCache {
            name: name.to_string(),
            model,
            capacity,
            plans: Mutex::new(VecDeque::new()),
        })
    }

    /// The plan for an f32 input of exactly `shape` (`[n, c, h, w]`, as the ONNX file declares
    /// it), made (and cached) on first use. The plan takes its input channel-last,
    /// `[n, h, w, c]` ([`optimise`]).
    pub(crate) fn plan(&self, shape: &[usize]) -> Result<Plan> {
        if let Some(plan) = self.lookup(shape) {
            return Ok(plan);
        }
        // Optimise outside the lock: two threads missing together both build it, which is
        // harmless, and nobody waits behind a 100 ms optimisation they do not need.
        let plan = optimise(self.model.clone(), shape)
            .and_then(|m| m.into_runnable())
            .map_err(|e| invalid(&self.name, &e))?;
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if !plans.iter().any(|(s, _)| s == shape) {
            if plans.len() >= self.capacity {
                plans.pop_front();
            }
            plans.push_back((shape.to_vec(), plan.clone()));
        }
        Ok(plan)
    }

    fn lookup(&self, shape: &[usize]) -> Option<Plan> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let i = plans.iter().position(|(s, _)| s == shape)?;
        // Move to the back: the cache evicts least recently used first.
        let entry = plans.remove(i)?;
        let plan = entry.1.clone();
        plans.push_back(entry);
        Some(plan)
    }
}

/// The optimised model for an f32 input of exactly `shape` (the ONNX model's own layout,
/// `[batch, channels, height, width]`): tract's declutter pass, the convolutions rewritten
/// channel-last onto this crate's ops, tract's `conv_nhwc` for any other convolution, the input
/// taken channel-last, then tract's optimiser.
///
/// The returned model's input is `[batch, height, width, channels]` ([`channel_last_input`]).
pub(crate) fn optimise(model: InferenceModel, shape: &[usize]) -> TractResult<TypedModel> {
    let fact = InferenceFact::dt_shape(f32::datum_type(), shape);
    model
        .with_input_fact(0, fact)
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .and_then(crate::rewrite::rewrite)
        .and_then(channel_last)
        .and_then(channel_last_input)
        .and_then(|m| m.into_optimized())
}

/// Replace the model's channel-first input by a channel-last one, `[n, h, w, c]` for the
/// `[n, c, h, w]` the ONNX file declares, followed by a `MoveAxis` back to channel-first.
///
/// Both models' first convolution is one of this crate's channel-last ops, which [`crate::rewrite`]
/// gave a `MoveAxis` from channel-first; tract's optimiser cancels the two, so a photo goes from
/// its interleaved RGB pixels into the first convolution without being transposed: the callers
/// fill the input tensor pixel by pixel, and the plan does not move every input value once more
/// (CenterFace at 640x480: a 3.7 MB copy before the first convolution).
fn channel_last_input(mut model: TypedModel) -> TractResult<TypedModel> {
    let inputs = model.input_outlets()?.to_vec();
    ensure!(
        inputs.len() == 1,
        "expected one input, found {}",
        inputs.len()
    );
    let old = inputs[0];
    let fact = model.outlet_fact(old)?.clone();
    let Some(&[n, c, h, w]) = fact.shape.as_concrete() else {
        bail!("expected a concrete 4-d input, found {:?}", fact.shape);
    };
    let name = model.node(old.node).name.clone();
    let source = model.add_source(format!("{name}.nhwc"), fact.datum_type.fact([n, h, w, c]))?;
    let moved = model.wire_node(format!("{name}.nchw"), AxisOp::Move(3, 1), &[source])?[0];
    for inlet in model.outlet_successors(old).to_vec() {
        model.add_edge(moved, inlet)?;
    }
    let outputs: Vec<OutletId> = model
        .output_outlets()?
        .iter()
        .map(|&o| if o == old { moved } else { o })
        .collect();
    model.outputs = outputs;
    model.set_input_outlets(&[source])?;
    model.into_compact()
}

/// Rewrite every remaining tract convolution of `model` to run channel-last (see the module
/// documentation).
fn channel_last(mut model: TypedModel) -> TractResult<TypedModel> {
    let transform = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
        .ok_or_else(|| TractError::msg("tract has no conv_nhwc transform"))?;
    model.transform(transform.as_ref())?;
    Ok(model)
}

/// An f32 tensor that takes over `data` (no copy), which must hold exactly the elements of
/// `shape` in row-major order.
pub(crate) fn tensor(shape: [usize; 4], data: Vec<f32>) -> Result<Tensor> {
    tract_ndarray::Array4::from_shape_vec(shape, data)
        .map(IntoTensor::into_tensor)
        .map_err(|e| Error::Inference(e.to_string()))
}

/// Run `plan` on one f32 tensor and return its outputs.
pub(crate) fn run(plan: &Plan, input: Tensor) -> Result<TVec<TValue>> {
    plan.run(tvec!(input.into()))
        .map_err(|e| Error::Inference(format!("{e:#}")))
}

fn invalid(name: &str, e: &TractError) -> Error {
    Error::ModelInvalid {
        name: name.to_string(),
        message: format!("{e:#}"),
    }
}
