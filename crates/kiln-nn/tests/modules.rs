//! Modules built from children, as users write them: printing and state-dict names against
//! PyTorch's (fixtures/make_modules.py), and what a container gets from declaring its
//! children alone — train/eval, moving parameters and buffers, random streams, loading.

mod common;

use std::collections::BTreeMap;

use kiln_autograd::Var;
use kiln_nn::models::BasicBlock;
use kiln_nn::{Conv2d, Dropout, Module, Seeds, Sequential};
use kiln_tensor::{Device, Tensor};
use kiln_wgsl::testing::context_or_skip;
use serde_json::Value;

fn fixture(model: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/modules.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all[model].clone()
}

/// PyTorch's state-dict keys with their shapes, in its order.
fn torch_state(model: &str) -> Vec<(String, Vec<usize>)> {
    let entries = fixture(model)["state_dict"].as_array().unwrap().clone();
    entries
        .iter()
        .map(|entry| {
            let shape = entry[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (entry[0].as_str().unwrap().to_string(), shape)
        })
        .collect()
}

fn resnet() -> kiln_nn::Sequential {
    kiln_nn::models::cifar10_resnet(&mut Seeds::new(0)).unwrap()
}

fn block(inputs: usize, outputs: usize, stride: usize, seed: u64) -> BasicBlock {
    BasicBlock::new(inputs, outputs, stride, &mut Seeds::new(seed)).unwrap()
}

#[test]
fn models_print_as_pytorch_prints_them() {
    let printed = |model: &str| fixture(model)["print"].as_str().unwrap().to_string();
    assert_eq!(common::asl_cnn(0, 1.0).describe(), printed("asl_cnn"));
    assert_eq!(block(16, 32, 2, 0).describe(), printed("block_16_to_32_stride_2"));
    assert_eq!(block(16, 16, 1, 0).describe(), printed("block_16_to_16"), "an empty shortcut: Sequential()");
    assert_eq!(resnet().describe(), printed("cifar10_resnet"));
}

#[test]
fn a_residual_blocks_state_has_pytorchs_names_and_shapes_in_its_order() {
    let models: [(&str, Box<dyn Module>); 3] = [
        ("block_16_to_32_stride_2", Box::new(block(16, 32, 2, 0))),
        ("block_16_to_16", Box::new(block(16, 16, 1, 0))),
        ("cifar10_resnet", Box::new(resnet())),
    ];
    for (model, block) in models {
        let want = torch_state(model);
        let state = kiln_nn::state_dict(block.as_ref()).unwrap();
        let got: BTreeMap<String, Vec<usize>> = state.iter().map(|(k, t)| (k.clone(), t.shape().to_vec())).collect();
        assert_eq!(got, want.iter().cloned().collect::<BTreeMap<_, _>>(), "{model}");
        // Parameters and buffers each in PyTorch's order (an optimizer's state follows it).
        let (buffer_names, parameter_names): (Vec<_>, Vec<_>) =
            want.into_iter().map(|(name, _)| name).partition(|name| {
                name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked")
            });
        assert_eq!(block.parameters().into_iter().map(|(name, _)| name).collect::<Vec<_>>(), parameter_names);
        assert_eq!(block.buffers().into_iter().map(|(name, _)| name).collect::<Vec<_>>(), buffer_names);
    }
}

/// A user's block that declares its children and writes `forward`, nothing else: a dropout
/// beside a residual block and a nested container with dropout of its own.
struct Head {
    block: BasicBlock,
    drop: Dropout,
    tail: Sequential,
}

impl Head {
    fn new(seed: u64) -> Self {
        let seeds = &mut Seeds::new(seed);
        let tail = Sequential::new().add(Conv2d::new(8, 4, 1, seeds).unwrap()).add(Dropout::new(0.5, seeds));
        Head { block: BasicBlock::new(4, 8, 2, seeds).unwrap(), drop: Dropout::new(0.5, seeds), tail }
    }
}

impl Module for Head {
    kiln_nn::children!(block, drop, tail);

    fn forward(&mut self, input: &Var) -> kiln_nn::Result<Var> {
        let x = self.block.forward(input)?;
        self.tail.forward(&self.drop.forward(&x)?)
    }
}

fn images(device: &Device) -> Var {
    Var::constant(Tensor::randn(&[3, 4, 6, 6], 11, device).unwrap())
}

/// A buffer's values, the running statistics' and `num_batches_tracked`'s alike.
fn buffer_values(tensor: &Tensor) -> Vec<f32> {
    match tensor.dtype() {
        kiln_tensor::DType::F32 => tensor.to_vec().unwrap(),
        _ => tensor.to_vec_i32().unwrap().into_iter().map(|v| v as f32).collect(),
    }
}

fn output(model: &mut dyn Module, device: &Device) -> Vec<f32> {
    model.forward(&images(device)).unwrap().value().to_vec().unwrap()
}

#[test]
fn a_module_that_declares_its_children_switches_them_to_evaluation() {
    let mut head = Head::new(1);
    let running = |head: &Head| head.buffers().into_iter().map(|(_, t)| buffer_values(&t)).collect::<Vec<_>>();
    let before = running(&head);
    assert_ne!(output(&mut head, &Device::Cpu), output(&mut head, &Device::Cpu), "training: fresh dropout masks");
    assert_ne!(running(&head), before, "training: batch norm's statistics move");
    head.eval();
    let frozen = running(&head);
    let first = output(&mut head, &Device::Cpu);
    assert_eq!(first, output(&mut head, &Device::Cpu), "evaluation: no dropout, running statistics");
    assert_eq!(running(&head), frozen, "evaluation: the statistics stay");
    head.train();
    assert_ne!(output(&mut head, &Device::Cpu), first);
}

#[test]
fn nested_random_streams_are_named_and_restored_by_name() {
    let mut head = Head::new(2);
    output(&mut head, &Device::Cpu);
    let names: Vec<String> = head.random_state().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["drop.calls", "tail.1.calls"]);
    // A second model put at the first one's positions draws the same masks from there on.
    let mut other = Head::new(2);
    for (name, position) in head.random_state() {
        other.set_random_state(&name, position).unwrap();
    }
    for (name, tensor) in head.buffers() {
        other.set_buffer(&name, tensor).unwrap();
    }
    assert_eq!(output(&mut head, &Device::Cpu), output(&mut other, &Device::Cpu));
    let err = other.set_random_state("tail.0.calls", 1).unwrap_err().to_string();
    assert!(err.contains("no random stream named 'calls'"), "{err}");
    let err = other.set_buffer("block.bn3.running_mean", Tensor::zeros(&[8], &Device::Cpu).unwrap());
    assert!(err.unwrap_err().to_string().contains("no buffer named 'bn3.running_mean'"));
}

#[test]
fn a_state_dict_loads_into_a_block_made_from_another_seed() {
    let (mut trained, mut fresh) = (Head::new(3), Head::new(4));
    output(&mut trained, &Device::Cpu); // moves the running statistics off their start
    fresh.load_state_dict(&trained.state_dict().unwrap()).unwrap();
    trained.eval();
    fresh.eval();
    assert_eq!(output(&mut trained, &Device::Cpu), output(&mut fresh, &Device::Cpu));
}

#[test]
fn moving_a_block_moves_its_parameters_and_buffers() {
    let Some(ctx) = context_or_skip("moving_a_block_moves_its_parameters_and_buffers") else { return };
    let gpu = Device::Gpu(ctx);
    let mut head = Head::new(5);
    output(&mut head, &Device::Cpu);
    head.eval();
    let on_cpu = output(&mut head, &Device::Cpu);
    head.to_device(&gpu).unwrap();
    assert!(head.parameters().iter().all(|(_, p)| p.value().device() == gpu), "parameters");
    for (name, buffer) in head.buffers() {
        assert!(buffer.device() == gpu, "{name} stays behind on the CPU");
    }
    let on_gpu = output(&mut head, &gpu);
    assert!(on_gpu.iter().zip(&on_cpu).all(|(g, c)| (g - c).abs() <= 1e-4 * c.abs().max(1.0)));
    head.to_device(&Device::Cpu).unwrap();
    assert_eq!(output(&mut head, &Device::Cpu), on_cpu, "and back, the same values");
}
