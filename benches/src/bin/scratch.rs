#![allow(clippy::expect_used, clippy::unwrap_used)]
use benches as _;
use tract_onnx::prelude::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape: Vec<usize> = args[2].split(',').map(|d| d.parse().unwrap()).collect();
    let mut m = tract_onnx::onnx()
        .model_for_path(&args[1])
        .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .unwrap();
    let t = tract_onnx::tract_core::transform::get_transform("conv_nhwc")
        .unwrap()
        .unwrap();
    m.transform(t.as_ref()).unwrap();
    for n in m.nodes() {
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|o| format!("{:?}", m.outlet_fact(*o).unwrap()))
            .collect();
        println!(
            "#{} {} [{}] {:?} in={:?} out={:?}",
            n.id,
            n.name,
            n.op.name(),
            n.op.info().unwrap(),
            ins,
            n.outputs[0].fact
        );
    }
}
