//! Each differentiable op against PyTorch's values (fixtures/make_ops.py): the output and
//! every input's gradient of Σ output·r, on the CPU and the GPU.

use kiln_autograd::Var;
use kiln_tensor::{Device, Pool2d, Tensor};
use kiln_wgsl::testing::context_or_skip;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/ops.json")).expect("valid fixture")
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

type Op = fn(&[Var], &Value, &Device) -> Var;

/// The op of each fixture case, written with Kiln's `Var` ops.
const OPS: [(&str, Op); 28] = [
    ("div", |v, _, _| v[0].div(&v[1]).unwrap()),
    ("neg", |v, _, _| v[0].neg().unwrap()),
    ("exp", |v, _, _| v[0].exp().unwrap()),
    ("log", |v, _, _| v[0].log().unwrap()),
    ("sqrt", |v, _, _| v[0].sqrt().unwrap()),
    ("pow_2.5", |v, _, _| v[0].pow_scalar(2.5).unwrap()),
    ("sigmoid", |v, _, _| v[0].sigmoid().unwrap()),
    ("tanh", |v, _, _| v[0].tanh().unwrap()),
    ("leaky_relu_0.1", |v, _, _| v[0].leaky_relu(0.1).unwrap()),
    ("gelu", |v, _, _| v[0].gelu(false).unwrap()),
    ("gelu_tanh", |v, _, _| v[0].gelu(true).unwrap()),
    ("sum_1_keepdim", |v, _, _| v[0].sum(1, true).unwrap()),
    ("mean_-1", |v, _, _| v[0].mean(-1, false).unwrap()),
    ("amax_1", |v, _, _| v[0].max(1, false).unwrap()),
    ("amax_ties", |v, _, _| v[0].max(1, false).unwrap()),
    ("softmax_1", |v, _, _| v[0].softmax(1).unwrap()),
    ("log_softmax_0", |v, _, _| v[0].log_softmax(0).unwrap()),
    ("view", |v, _, _| v[0].view(&[6, 4]).unwrap()),
    ("permute", |v, _, _| v[0].permute(&[2, 0, 1]).unwrap()),
    ("transpose", |v, _, _| v[0].transpose(0, 2).unwrap()),
    ("narrow", |v, _, _| v[0].narrow(1, 1, 3).unwrap()),
    ("cat", |v, _, _| Var::cat(&[&v[0], &v[1], &v[0]], 1).unwrap()),
    ("stack", |v, _, _| Var::stack(&[&v[0], &v[1]], 1).unwrap()),
    ("index_select", |v, f, _| {
        let rows: Vec<usize> =
            f["index_rows"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
        v[0].index_select(&rows).unwrap()
    }),
    ("gather", |v, f, device| {
        let index = &f["gather_index"];
        let picks = floats(index).into_iter().map(|i| i as i32).collect();
        v[0].gather(1, &Tensor::from_vec_i32(picks, &shape(index), device).unwrap()).unwrap()
    }),
    ("matmul_shared", |v, _, _| v[0].matmul(&v[1]).unwrap()),
    ("avg_pool2d", |v, _, _| v[0].avg_pool2d(&Pool2d::new(3).stride(2).padding(1)).unwrap()),
    ("adaptive_avg_pool2d", |v, _, _| v[0].adaptive_avg_pool2d([2, 4]).unwrap()),
];

fn assert_close(what: &str, got: &Tensor, want: &Value) {
    assert_eq!(got.shape(), shape(want).as_slice(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().unwrap().iter().zip(floats(want)).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}[{i}]: {g} vs PyTorch's {w}");
    }
}

#[test]
fn ops_and_their_gradients_match_pytorch() {
    let fixture = fixture();
    let cases = fixture.as_object().unwrap().keys().filter(|k| fixture[k.as_str()].get("output").is_some()).count();
    assert_eq!(cases, OPS.len(), "one Kiln op per fixture case");
    let mut devices = vec![Device::Cpu];
    devices.extend(context_or_skip("ops_and_their_gradients_match_pytorch").map(Device::Gpu));
    for (name, op) in OPS {
        let case = &fixture[name];
        for device in &devices {
            let inputs: Vec<Var> =
                case["inputs"].as_array().unwrap().iter().map(|v| Var::parameter(tensor(v, device))).collect();
            let output = op(&inputs, &fixture, device);
            assert_close(&format!("{name} on {device}"), &output.value(), &case["output"]);
            output.mul(&Var::constant(tensor(&case["r"], device))).unwrap().sum_all().unwrap().backward().unwrap();
            for (i, (input, want)) in inputs.iter().zip(case["grads"].as_array().unwrap()).enumerate() {
                assert_close(&format!("{name} on {device}: input {i}'s gradient"), &input.grad().unwrap(), want);
            }
        }
    }
}
