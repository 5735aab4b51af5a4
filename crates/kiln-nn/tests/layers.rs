//! The layers beyond the tutorials' (average and adaptive pooling, BatchNorm1d, LeakyReLU,
//! Sigmoid, Tanh, GELU, Identity) against PyTorch (fixtures/make_layers.py), on the CPU and
//! the GPU: training-mode output, the gradients of the input and of every parameter, batch
//! norm's running statistics after the step, evaluation-mode output, state-dict names and
//! printing.

use kiln_autograd::{Var, no_grad};
use kiln_nn::{AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, GELU, Identity, LeakyReLU, Module, Sigmoid, StateDict, Tanh};
use kiln_tensor::{DType, Device, Tensor};
use kiln_wgsl::testing::context_or_skip;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/layers.json")).expect("valid fixture")
}

fn shape(v: &Value) -> Vec<usize> {
    v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn tensor(v: &Value, device: &Device) -> Tensor {
    Tensor::from_vec(floats(v), &shape(v), device).unwrap()
}

/// A state dict from the fixture: integer entries (num_batches_tracked) as i32.
fn state(v: &Value) -> StateDict {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(key, entry)| {
            let data = entry["data"].as_array().unwrap();
            let t = if data.iter().all(|x| x.is_i64()) && key.ends_with("num_batches_tracked") {
                Tensor::from_vec_i32(
                    data.iter().map(|x| x.as_i64().unwrap() as i32).collect(),
                    &shape(entry),
                    &Device::Cpu,
                )
            } else {
                Tensor::from_vec(floats(entry), &shape(entry), &Device::Cpu)
            };
            (key.clone(), t.unwrap())
        })
        .collect()
}

fn layer(name: &str) -> Box<dyn Module> {
    match name {
        "avg_pool_3_stride_2_padding_1" => Box::new(AvgPool2d::new(3).stride(2).padding(1)),
        "avg_pool_2" => Box::new(AvgPool2d::new(2)),
        "adaptive_avg_pool_3x2" => Box::new(AdaptiveAvgPool2d::sized([3, 2])),
        "adaptive_avg_pool_1" => Box::new(AdaptiveAvgPool2d::new(1)),
        "batch_norm_1d" => Box::new(BatchNorm1d::new(4).unwrap()),
        "batch_norm_1d_sequence" => Box::new(BatchNorm1d::new(3).unwrap()),
        "leaky_relu_0.2" => Box::new(LeakyReLU::new(0.2)),
        "leaky_relu" => Box::new(LeakyReLU::default()),
        "sigmoid" => Box::new(Sigmoid),
        "tanh" => Box::new(Tanh),
        "gelu" => Box::new(GELU::new()),
        "gelu_tanh" => Box::new(GELU::tanh()),
        "identity" => Box::new(Identity),
        other => panic!("no Kiln layer for the fixture's {other}"),
    }
}

fn assert_close(what: &str, got: &Tensor, want: &Value) {
    assert_eq!(got.shape(), shape(want).as_slice(), "{what}: shape");
    let got = match got.dtype() {
        DType::I32 => got.to_vec_i32().unwrap().into_iter().map(|v| v as f32).collect(),
        _ => got.to_vec().unwrap(),
    };
    for (i, (g, w)) in got.iter().zip(floats(want)).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}[{i}]: {g} vs PyTorch's {w}");
    }
}

#[test]
fn layers_compute_and_differentiate_as_pytorch() {
    let fixture = fixture();
    let mut devices = vec![Device::Cpu];
    devices.extend(context_or_skip("layers_compute_and_differentiate_as_pytorch").map(Device::Gpu));
    let cases: Vec<_> = fixture.as_object().unwrap().iter().filter(|(name, _)| *name != "torch_version").collect();
    assert_eq!(cases.len(), 13, "every layer the fixture holds");
    for (name, case) in cases {
        for device in &devices {
            let what = |part: &str| format!("{name} on {device}: {part}");
            let mut layer = layer(name);
            assert_eq!(layer.describe(), case["print"].as_str().unwrap(), "{name}: printing");
            kiln_nn::load_into(layer.as_mut(), &state(&case["before"])).unwrap();
            layer.to_device(device).unwrap();
            layer.train();
            let x = Var::parameter(tensor(&case["input"], device));
            let y = layer.forward(&x).unwrap();
            assert_close(&what("output"), &y.value(), &case["output"]);
            y.mul(&Var::constant(tensor(&case["r"], device))).unwrap().sum_all().unwrap().backward().unwrap();
            assert_close(&what("input gradient"), &x.grad().unwrap(), &case["input_grad"]);
            let grads = case["parameter_grads"].as_object().unwrap();
            assert_eq!(layer.parameters().len(), grads.len(), "{}", what("parameters"));
            for (key, parameter) in layer.parameters() {
                assert_close(&what(&format!("{key}'s gradient")), &parameter.grad().unwrap(), &grads[&key]);
            }
            let after = kiln_nn::state_dict(layer.as_ref()).unwrap();
            let want = case["after"].as_object().unwrap();
            assert_eq!(after.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{}", what("state keys"));
            for (key, value) in &after {
                assert_close(&what(key), value, &want[key]);
            }
            layer.eval();
            let evaluated = no_grad(|| layer.forward(&Var::constant(tensor(&case["input"], device)))).unwrap();
            assert_close(&what("evaluation output"), &evaluated.value(), &case["eval_output"]);
        }
    }
}

#[test]
fn bad_shapes_are_clear_errors() {
    let mut norm = BatchNorm1d::new(3).unwrap();
    let x = Var::constant(Tensor::zeros(&[2, 3, 4, 5], &Device::Cpu).unwrap());
    let err = norm.forward(&x).unwrap_err().to_string();
    assert!(err.contains("BatchNorm1d needs an [N, C] or [N, C, L] input, got [2, 3, 4, 5]"), "{err}");
    let flat = Var::constant(Tensor::zeros(&[2, 3], &Device::Cpu).unwrap());
    assert!(AdaptiveAvgPool2d::new(2).forward(&flat).is_err());
    assert!(AvgPool2d::new(2).forward(&flat).is_err());
}
