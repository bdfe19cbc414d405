//! What this crate's convolution ops share as tract ops.
//!
//! Each op ([`crate::gemm_conv::GemmConv`], [`crate::depthwise::Depthwise`],
//! [`crate::depthwise::DepthwisePointwise`], [`crate::depthwise::ExpandDepthwiseProject`]) takes
//! one f32 input and fills one f32 output, both channel-last and row-major. It implements
//! [`Kernel`] (its name, its output shape, its computation), and [`tract_op!`] makes a tract op of
//! it: the output allocation, the input and output views and the shape checks live here once.
//! [`Params`] holds their weights and biases on cache-line boundaries, and [`lanes`] and
//! [`store_sum`] are the hand-written kernels' vector load and store.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{DimLike, ensure};

/// A computation from one f32 tensor to another, as this crate's tract ops run it.
pub(crate) trait Kernel {
    /// The op's name in tract's plans and profiles.
    const NAME: &'static str;

    /// Its parameters, for tract's `info` (shown by `node_profile`).
    fn describe(&self) -> Vec<String>;

    /// The output shape for an input shape, or why the input does not fit.
    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>>;

    /// Fill every element of `y` (of [`Kernel::output_shape`], row-major) from `x` (of an
    /// input shape that `output_shape` accepted, row-major).
    fn compute(&self, x: &[f32], y: &mut [f32]);
}

/// Channels accumulated together by the hand-written kernels: one AVX-512 register, two AVX2
/// registers.
pub(crate) const LANES: usize = 16;

/// `LANES` values of `v` from `at` (zeros past its end, which the callers never reach).
#[inline(always)]
pub(crate) fn lanes(v: &[f32], at: usize) -> [f32; LANES] {
    v.get(at..at + LANES)
        .and_then(|s| <[f32; LANES]>::try_from(s).ok())
        .unwrap_or([0.0; LANES])
}

/// `bias` plus each of `sums`, clamped to `[lo, hi]`, into `out[at..at + LANES]` (nothing past
/// the end of `out`, which the callers never reach): how the hand-written kernels finish a block
/// of `LANES` output channels.
#[inline(always)]
pub(crate) fn store_sum(
    out: &mut [f32],
    at: usize,
    bias: [f32; LANES],
    sums: &[[f32; LANES]],
    lo: f32,
    hi: f32,
) {
    let mut acc = bias;
    for sum in sums {
        for j in 0..LANES {
            acc[j] += sum[j];
        }
    }
    if let Some(o) = out.get_mut(at..at + LANES) {
        for (o, a) in o.iter_mut().zip(acc) {
            *o = crate::gemm_conv::clamp(a, lo, hi);
        }
    }
}

/// One cache line of values: the unit in which [`Params`] stores them.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([f32; LANES]);

/// An op's read-only f32 parameters (weights, biases), shared between its clones, in storage
/// that starts on a cache line (64 bytes). A plain `Arc<[f32]>` starts 16 bytes past one (after
/// its two reference counts), so that every 64-byte vector `gemm`'s kernels load from a weight
/// row of 16, 32 or 64 floats straddled two cache lines.
#[derive(Clone)]
pub(crate) struct Params {
    lines: Arc<[Line]>,
    len: usize,
}

impl Params {
    /// A copy of `values`.
    pub(crate) fn new(values: &[f32]) -> Params {
        let mut lines = vec![Line([0.0; LANES]); values.len().div_ceil(LANES)];
        bytemuck::cast_slice_mut::<Line, f32>(&mut lines)[..values.len()].copy_from_slice(values);
        Params {
            lines: lines.into(),
            len: values.len(),
        }
    }
}

impl std::ops::Deref for Params {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        let all: &[f32] = bytemuck::cast_slice(&self.lines);
        all.get(..self.len).unwrap_or(all)
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Whether two parameter arrays hold the same values, bit for bit (so that `Eq` holds for ops
/// with f32 parameters: a NaN equals itself, 0.0 and -0.0 differ).
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Evaluate `kernel` on its one input.
pub(crate) fn eval<K: Kernel>(kernel: &K, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    ensure!(inputs.len() == 1, "{} takes one input", K::NAME);
    let input = &inputs[0];
    ensure!(
        input.datum_type() == f32::datum_type(),
        "{} takes f32, got {:?}",
        K::NAME,
        input.datum_type()
    );
    let out_shape = kernel.output_shape(input.shape())?;
    // SAFETY: `Kernel::compute` writes every element of the output before anything reads it.
    #[allow(unsafe_code)]
    let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
    {
        let view = input.try_as_plain_ram()?;
        let mut out_view = output.try_as_plain_ram_mut()?;
        kernel.compute(view.as_slice::<f32>()?, out_view.as_slice_mut::<f32>()?);
    }
    Ok(tvec!(output.into_tvalue()))
}

/// The output fact of `kernel` for its one input fact.
pub(crate) fn output_facts<K: Kernel>(
    kernel: &K,
    inputs: &[&TypedFact],
) -> TractResult<TVec<TypedFact>> {
    ensure!(inputs.len() == 1, "{} takes one input", K::NAME);
    let fact = inputs[0];
    ensure!(
        fact.datum_type == f32::datum_type(),
        "{} takes f32",
        K::NAME
    );
    let shape: TVec<TDim> = fact.shape.iter().cloned().collect();
    Ok(tvec!(f32::fact(kernel.output_shape(&shape)?)))
}

/// Implement tract's `Op`, `EvalOp` and `TypedOp` for a [`Kernel`].
macro_rules! tract_op {
    ($ty:ty) => {
        impl tract_onnx::tract_core::internal::Op for $ty {
            fn name(&self) -> tract_onnx::tract_core::internal::StaticName {
                <$ty as $crate::kernel_op::Kernel>::NAME.into()
            }

            fn info(&self) -> tract_onnx::prelude::TractResult<Vec<String>> {
                Ok($crate::kernel_op::Kernel::describe(self))
            }

            fn as_typed(&self) -> Option<&dyn tract_onnx::tract_core::internal::TypedOp> {
                Some(self)
            }
        }

        impl tract_onnx::tract_core::internal::EvalOp for $ty {
            fn eval(
                &self,
                _ctx: &tract_onnx::tract_core::internal::EvalContext,
                inputs: tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>,
            ) -> tract_onnx::prelude::TractResult<
                tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>,
            > {
                $crate::kernel_op::eval(self, inputs)
            }

            fn eval_out_of_plan(
                &self,
                inputs: tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>,
            ) -> tract_onnx::prelude::TractResult<
                Option<tract_onnx::prelude::TVec<tract_onnx::prelude::TValue>>,
            > {
                $crate::kernel_op::eval(self, inputs).map(Some)
            }
        }

        impl tract_onnx::tract_core::internal::TypedOp for $ty {
            fn as_op(&self) -> &dyn tract_onnx::tract_core::internal::Op {
                self
            }

            fn as_op_mut(&mut self) -> &mut dyn tract_onnx::tract_core::internal::Op {
                self
            }

            fn output_facts(
                &self,
                inputs: &[&tract_onnx::prelude::TypedFact],
            ) -> tract_onnx::prelude::TractResult<
                tract_onnx::prelude::TVec<tract_onnx::prelude::TypedFact>,
            > {
                $crate::kernel_op::output_facts(self, inputs)
            }
        }
    };
}

pub(crate) use tract_op;

#[cfg(test)]
mod tests {
    use super::*;

    /// The values come back unchanged, from storage that starts on a cache line, for lengths
    /// around a line's.
    #[test]
    fn params_keep_values_on_a_cache_line() {
        for len in [0, 1, 15, 16, 17, 100] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let params = Params::new(&values);
            assert_eq!(&*params, values.as_slice(), "length {len}");
            assert_eq!(params.as_ptr() as usize % 64, 0, "length {len}");
            assert_eq!(&*params.clone(), values.as_slice(), "clone, length {len}");
        }
    }
}
