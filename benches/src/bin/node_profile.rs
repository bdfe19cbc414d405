//! Where tract spends its time inside one ONNX model: every node of the optimised plan is timed
//! over several runs, then times are summed per operator kind and per node.
//!
//! ```text
//! node_profile [--reps N] [--top K] [--tract-only] [--transform NAME]... MODEL.onnx D0,D1,D2,D3
//! ```
//!
//! By default it profiles the plan `mask_detect::Detector` runs (`mask_detect::optimised_model`).
//! `--tract-only` profiles tract's own pipeline instead (declutter, optimise), and each
//! `--transform NAME` (implies `--tract-only`) applies a tract transform between the two.
//!
//! Example: `node_profile models/centerface.onnx 1,3,480,640`. The input is filled with a fixed
//! pattern; times are wall-clock medians over `N` runs (after one warm-up run), in milliseconds.

// A benchmark frontend: bad arguments stop it at once, loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use tract_onnx::prelude::*;

fn main() {
    allocator::keep_freed_memory();
    let mut reps = 10usize;
    let mut top = 15usize;
    let mut transforms: Vec<String> = Vec::new();
    let mut tract_only = false;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--top" => top = args.next().and_then(|v| v.parse().ok()).expect("--top K"),
            "--transform" => {
                tract_only = true;
                transforms.push(args.next().expect("--transform NAME"));
            }
            "--tract-only" => tract_only = true,
            _ => rest.push(arg),
        }
    }
    let [path, shape] = rest.as_slice() else {
        panic!(
            "usage: node_profile [--reps N] [--top K] [--tract-only] [--transform NAME]... MODEL.onnx D0,D1,D2,D3"
        );
    };
    let shape: Vec<usize> = shape
        .split(',')
        .map(|d| d.parse().expect("dimension"))
        .collect();
    let plan = if tract_only {
        tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .and_then(|mut m| {
                for name in &transforms {
                    let t = tract_onnx::tract_core::transform::get_transform(name)?
                        .unwrap_or_else(|| panic!("no tract transform named {name}"));
                    m.transform(t.as_ref())?;
                }
                m.into_optimized()
            })
            .and_then(|m| m.into_runnable())
            .expect("model loads and optimises")
    } else {
        let bytes = std::fs::read(path).expect("model file");
        mask_detect::optimised_model(&bytes, &shape)
            .expect("model loads and optimises")
            .into_runnable()
            .expect("runnable plan")
    };
    // Ours takes its input channel-last: the plan's own input shape.
    let shape: Vec<usize> = plan
        .model()
        .input_fact(0)
        .ok()
        .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
        .expect("concrete input shape");
    let n: usize = shape.iter().product();
    let input = Tensor::from_shape(
        &shape,
        &(0..n)
            .map(|i| (i % 255) as f32 / 127.5 - 1.0)
            .collect::<Vec<_>>(),
    )
    .expect("input tensor");

    // node id -> samples (ms)
    let mut samples: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut totals = Vec::new();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan).expect("state");
    for rep in 0..=reps {
        let t0 = Instant::now();
        let mut this_run: Vec<(usize, f64)> = Vec::new();
        state
            .run_plan_with_eval(tvec!(input.clone().into()), |ctx, st, node, inputs| {
                let t = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                this_run.push((node.id, t.elapsed().as_secs_f64() * 1e3));
                out
            })
            .expect("run");
        if rep > 0 {
            totals.push(t0.elapsed().as_secs_f64() * 1e3);
            for (id, ms) in this_run {
                samples.entry(id).or_default().push(ms);
            }
        }
    }
    let model = plan.model();
    let per_node: Vec<(usize, f64)> = samples.iter().map(|(id, s)| (*id, median(s))).collect();
    let mut per_op: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (id, ms) in &per_node {
        let e = per_op
            .entry(model.node(*id).op().name().to_string())
            .or_default();
        e.0 += ms;
        e.1 += 1;
    }
    let sum: f64 = per_node.iter().map(|(_, ms)| ms).sum();
    println!(
        "{path} {shape:?}: whole run median {:.2} ms, sum of node medians {sum:.2} ms, {} nodes",
        median(&totals),
        per_node.len()
    );
    println!("\nper operator kind:");
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    for (op, (ms, count)) in ops {
        println!(
            "{:>9.2} ms {:>5.1}%  {count:>4}x  {op}",
            ms,
            100.0 * ms / sum
        );
    }
    println!("\ntop {top} nodes:");
    let mut nodes = per_node.clone();
    nodes.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (id, ms) in nodes.into_iter().take(top) {
        let node = model.node(id);
        let out = model
            .outlet_fact(OutletId::new(id, 0))
            .map(|f| format!("{f:?}"))
            .unwrap_or_default();
        let info = node.op().info().unwrap_or_default().join("; ");
        println!(
            "{ms:>9.2} ms  #{id} {} [{}] -> {out} {info}",
            node.name,
            node.op().name()
        );
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
