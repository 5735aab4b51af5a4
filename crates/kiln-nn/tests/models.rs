//! The tutorials' ASL models built from kiln-nn: PyTorch's parameter names and shapes, the
//! default initialisation, train/eval behaviour, moving to the GPU, and a few Adam steps
//! that lower the loss alike on the CPU and on the GPU.

mod common;

use common::{asl_cnn, asl_mlp};
use kiln_autograd::{Var, no_grad};
use kiln_nn::{CrossEntropyLoss, Module, Seeds, Sequential, models};
use kiln_optim::{Adam, Optimizer};
use kiln_tensor::{Device, Tensor};
use kiln_wgsl::testing::context_or_skip;

fn shapes(model: &Sequential) -> Vec<(String, Vec<usize>)> {
    model.parameters().into_iter().map(|(name, p)| (name, p.value().shape().to_vec())).collect()
}

/// (The tutorials' models against PyTorch's printing: tests/modules.rs.)
#[test]
fn nested_containers_print_indented_and_unnamed_modules_by_type() {
    // A container inside a container is indented one level further; a module without
    // settings prints its type's name.
    struct Scale;
    impl Module for Scale {
        fn forward(&mut self, input: &Var) -> kiln_nn::Result<Var> {
            Ok(input.clone())
        }
    }
    let seeds = &mut Seeds::new(0);
    let nested = Sequential::new()
        .add(Sequential::new().add(kiln_nn::Linear::new(3, 2, seeds).unwrap()).add(Scale))
        .add(kiln_nn::ReLU);
    let want = "\
Sequential(
  (0): Sequential(
    (0): Linear(in_features=3, out_features=2, bias=True)
    (1): Scale()
  )
  (1): ReLU()
)";
    assert_eq!(format!("{nested:?}"), want);
}

#[test]
fn parameters_carry_pytorchs_names_and_shapes() {
    let cnn = asl_cnn(0, 1.0);
    let names = shapes(&cnn);
    assert_eq!(names[0], ("0.weight".to_string(), vec![25, 1, 3, 3]));
    assert_eq!(names[2], ("1.weight".to_string(), vec![25]), "batch norm scale");
    assert_eq!(names.last().unwrap(), &("17.bias".to_string(), vec![24]));
    let buffers: Vec<String> = cnn.buffers().into_iter().map(|(name, _)| name).collect();
    assert_eq!(&buffers[..2], &["1.running_mean".to_string(), "1.running_var".to_string()]);
    let count: usize = cnn.parameters().iter().map(|(_, p)| p.value().len()).sum();
    // PyTorch's summary of the DLI model: 250 + 50 + 11,300 + 100 + 33,825 + 150 + 346,112 + 12,312.
    assert_eq!(count, 404_099);
    assert_eq!(shapes(&asl_mlp(0))[0], ("1.weight".to_string(), vec![512, 784]));
}

#[test]
fn initialisation_is_pytorchs_default_and_seeded() {
    let weights = |seed| asl_mlp(seed).parameters()[0].1.value().to_vec().unwrap();
    let w = weights(1);
    let bound = 1.0 / 784f32.sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let spread = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    assert!(mean.abs() < 1e-3 && (spread - bound * bound / 3.0).abs() < 1e-4, "uniform on ±1/√784");
    assert_eq!(w, weights(1));
    assert_ne!(w, weights(2));
}

#[test]
fn train_and_eval_switch_dropout_and_batch_norm() {
    let mut model = asl_cnn(3, 1.0);
    let x = Var::constant(Tensor::rand(&[4, 1, 28, 28], 4, &Device::Cpu).unwrap());
    let run = |model: &mut Sequential| no_grad(|| model.forward(&x).unwrap().value().to_vec().unwrap());
    let (a, b) = (run(&mut model), run(&mut model));
    assert_ne!(a, b, "training: fresh dropout masks each call");
    model.eval();
    let (c, d) = (run(&mut model), run(&mut model));
    assert_eq!(c, d, "evaluation: deterministic");
    let single = no_grad(|| {
        model.forward(&Var::constant(x.value().index_select(&[0]).unwrap())).unwrap().value().to_vec().unwrap()
    });
    assert!(
        single.iter().zip(&c).all(|(s, c)| (s - c).abs() < 1e-4),
        "running statistics: a sample's output ignores the batch"
    );
}

/// Logits and losses of `steps` Adam steps of `model` on one fixed batch, on `device`.
fn train(mut model: Sequential, device: &Device, steps: usize) -> Vec<f32> {
    model.to_device(device).unwrap();
    let x = Var::constant(Tensor::rand(&[16, 1, 28, 28], 7, &Device::Cpu).unwrap().to(device).unwrap());
    let labels: Vec<i32> = (0..16).map(|i| i % 24).collect();
    let labels = Tensor::from_vec_i32(labels, &[16], device).unwrap();
    let params = model.parameters().into_iter().map(|(_, p)| p).collect();
    let mut optimizer = Adam::new(params, 1e-3);
    let loss_fn = CrossEntropyLoss::new();
    (0..steps)
        .map(|_| {
            optimizer.zero_grad();
            let loss = loss_fn.forward(&model.forward(&x).unwrap(), &labels).unwrap();
            loss.backward().unwrap();
            optimizer.step().unwrap();
            loss.value().to_scalar().unwrap()
        })
        .collect()
}

#[test]
fn a_few_adam_steps_lower_the_loss_on_the_cpu() {
    for (name, model) in [("mlp", asl_mlp(5)), ("cnn", asl_cnn(5, 1.0))] {
        let losses = train(model, &Device::Cpu, 8);
        assert!(losses[7] < losses[0] * 0.7, "{name}: {losses:?}");
    }
}

#[test]
fn the_gpu_trains_like_the_cpu() {
    let Some(ctx) = context_or_skip("the_gpu_trains_like_the_cpu") else { return };
    let gpu = Device::Gpu(ctx);
    for (name, make) in [("mlp", asl_mlp as fn(u64) -> Sequential), ("cnn", |seed| asl_cnn(seed, 1.0))] {
        let (cpu, on_gpu) = (train(make(6), &Device::Cpu, 4), train(make(6), &gpu, 4));
        for (c, g) in cpu.iter().zip(&on_gpu) {
            assert!((c - g).abs() <= 1e-3 * c.abs().max(1.0), "{name}: cpu {cpu:?} gpu {on_gpu:?}");
        }
    }
}

#[test]
fn the_other_tutorials_models_have_their_sizes_and_outputs() {
    type Build = fn(&mut Seeds) -> kiln_nn::Result<Sequential>;
    // Parameter totals as the tutorials' own summaries print them (Keras `model.summary()`,
    // PyTorch `sum(p.numel())`), and each model's input and output shapes.
    let cases: [(&str, Build, [usize; 3], usize, usize); 4] = [
        ("fashion_mnist_cnn", models::fashion_mnist_cnn, [1, 28, 28], 10, 582_026),
        ("fashion_mnist_mlp", models::fashion_mnist_mlp, [1, 28, 28], 10, 669_706),
        ("mnist_mlp", models::mnist_mlp, [1, 28, 28], 10, 101_770),
        ("cifar10_lenet", models::cifar10_lenet, [3, 32, 32], 10, 62_006),
    ];
    for (name, build, [c, h, w], classes, parameters) in cases {
        let mut model = build(&mut Seeds::new(1)).unwrap();
        let count: usize = model.parameters().iter().map(|(_, p)| p.value().len()).sum();
        assert_eq!(count, parameters, "{name}");
        let x = Var::constant(Tensor::rand(&[3, c, h, w], 2, &Device::Cpu).unwrap());
        let logits = no_grad(|| model.forward(&x)).unwrap();
        assert_eq!(logits.value().shape(), &[3, classes], "{name}");
    }
}

#[test]
fn keras_layers_start_as_keras_does() {
    let mut seeds = Seeds::new(4);
    let dense = kiln_nn::Linear::keras(1024, 512, &mut seeds).unwrap();
    let conv = kiln_nn::Conv2d::keras(32, 64, 5, &mut seeds).unwrap();
    for (name, layer, fan_sum) in [("dense", &dense as &dyn Module, 1024 + 512), ("conv", &conv, (32 + 64) * 25)] {
        let params = layer.parameters();
        let (weight, bias) = (params[0].1.value().to_vec().unwrap(), params[1].1.value().to_vec().unwrap());
        let limit = (6.0 / fan_sum as f32).sqrt();
        assert!(weight.iter().all(|w| w.abs() <= limit), "{name}: Glorot's limit");
        let spread = weight.iter().map(|w| w * w).sum::<f32>() / weight.len() as f32;
        assert!((spread - limit * limit / 3.0).abs() < 0.05 * limit * limit, "{name}: uniform on ±limit");
        assert!(bias.iter().all(|&b| b == 0.0), "{name}: zero bias");
    }
}

#[test]
fn keras_initialisation_of_a_whole_model() {
    let build = || models::asl_cnn(&mut Seeds::new(9), 1.0).unwrap();
    let pytorch = build();
    let unchanged = build();
    kiln_nn::Init::PyTorch.apply(&unchanged, &mut Seeds::new(1)).unwrap();
    let keras = build();
    kiln_nn::Init::Keras.apply(&keras, &mut Seeds::new(1)).unwrap();
    let again = build();
    kiln_nn::Init::Keras.apply(&again, &mut Seeds::new(1)).unwrap();
    let values = |model: &Sequential| -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let params = model.parameters().into_iter();
        params.map(|(name, p)| (name, p.value().shape().to_vec(), p.value().to_vec().unwrap())).collect()
    };
    assert_eq!(values(&unchanged), values(&pytorch), "PyTorch's is how the layers start");
    assert_eq!(values(&again), values(&keras), "the same seeds start the same");
    for ((name, shape, start), (_, _, before)) in values(&keras).into_iter().zip(values(&pytorch)) {
        if shape.len() >= 2 {
            let (fan_in, fan_out) = kiln_nn::fans(&shape);
            let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
            assert!(start.iter().all(|w| w.abs() <= limit), "{name}: Glorot's limit");
            let spread = start.iter().map(|w| w * w).sum::<f32>() / start.len() as f32;
            assert!((spread - limit * limit / 3.0).abs() < 0.1 * limit * limit, "{name}: uniform on ±limit");
        } else if name.ends_with("bias") {
            assert!(start.iter().all(|&b| b == 0.0), "{name}: zero");
        } else {
            assert_eq!(start, before, "{name}: batch norm's γ is left alone");
        }
    }
}

/// A ReLU that `Sequential` does not recognise, so the layer before it runs unfused.
struct SeparateRelu;

impl Module for SeparateRelu {
    fn forward(&mut self, input: &Var) -> kiln_nn::Result<Var> {
        Ok(input.relu()?)
    }
}

/// conv → ReLU → batch norm → ReLU → flatten → linear → ReLU → linear, the ReLUs fused into
/// the layers before them or not.
fn relu_model(fused: bool) -> Sequential {
    let mut seeds = Seeds::new(4);
    let relu = |model: Sequential| if fused { model.add(kiln_nn::ReLU) } else { model.add(SeparateRelu) };
    let model = relu(Sequential::new().add(kiln_nn::Conv2d::new(1, 3, 3, &mut seeds).unwrap().padding(1)));
    let model = relu(model.add(kiln_nn::BatchNorm2d::new(3).unwrap()));
    let model = relu(model.add(kiln_nn::Flatten::new()).add(kiln_nn::Linear::new(48, 6, &mut seeds).unwrap()));
    model.add(kiln_nn::Linear::new(6, 4, &mut seeds).unwrap())
}

/// One training step's values on `device`: the logits, then every parameter's gradient and
/// every f32 buffer (batch norm's running statistics), in order.
fn step_values(model: &mut Sequential, images: &Tensor, labels: &Tensor, device: &Device) -> Vec<f32> {
    model.to_device(device).unwrap();
    let logits = model.forward(&Var::constant(images.to(device).unwrap())).unwrap();
    let loss = CrossEntropyLoss::new().forward(&logits, &labels.to(device).unwrap()).unwrap();
    loss.backward().unwrap();
    let mut all = logits.value().to_vec().unwrap();
    for (_, p) in model.parameters() {
        all.extend(p.grad().unwrap().to_vec().unwrap());
    }
    for (_, b) in model.buffers() {
        if b.dtype() == kiln_tensor::DType::F32 {
            all.extend(b.to_vec().unwrap());
        }
    }
    all
}

#[test]
fn sequential_fuses_a_relu_into_the_layer_before_it_with_the_same_result() {
    let images = Tensor::randn(&[5, 1, 4, 4], 8, &Device::Cpu).unwrap();
    let labels = Tensor::from_vec_i32(vec![0, 1, 2, 3, 1], &[5], &Device::Cpu).unwrap();
    let run = |fused: bool, device: &Device| step_values(&mut relu_model(fused), &images, &labels, device);
    let cpu = run(true, &Device::Cpu);
    assert_eq!(cpu, run(false, &Device::Cpu));
    let Some(ctx) = context_or_skip("sequential_fuses_a_relu_into_the_layer_before_it_with_the_same_result") else {
        return;
    };
    let gpu = Device::Gpu(ctx);
    for fused in [true, false] {
        let got = run(fused, &gpu);
        assert!(got.iter().zip(&cpu).all(|(g, c)| (g - c).abs() <= 1e-4 * c.abs().max(1.0)), "fused: {fused}");
    }
}

/// A max pooling that `Sequential` does not recognise, so the convolution and ReLU before
/// it run without it.
struct SeparatePool;

impl Module for SeparatePool {
    fn forward(&mut self, input: &Var) -> kiln_nn::Result<Var> {
        Ok(input.max_pool2d(&kiln_tensor::Pool2d::new(2))?)
    }
}

#[test]
fn sequential_fuses_conv_relu_and_max_pool_with_the_same_result() {
    let images = Tensor::randn(&[5, 1, 14, 14], 8, &Device::Cpu).unwrap();
    let labels = Tensor::from_vec_i32(vec![0, 1, 2, 3, 1], &[5], &Device::Cpu).unwrap();
    let run = |fused: bool, device: &Device| {
        let mut seeds = Seeds::new(4);
        let pool =
            |model: Sequential| if fused { model.add(kiln_nn::MaxPool2d::new(2)) } else { model.add(SeparatePool) };
        let block = |model: Sequential, inputs, outputs, seeds: &mut Seeds| {
            pool(model.add(kiln_nn::Conv2d::new(inputs, outputs, 3, seeds).unwrap()).add(kiln_nn::ReLU))
        };
        let model = block(block(Sequential::new(), 1, 3, &mut seeds), 3, 4, &mut seeds);
        let mut model = model.add(kiln_nn::Flatten::new()).add(kiln_nn::Linear::new(16, 4, &mut seeds).unwrap());
        step_values(&mut model, &images, &labels, device)
    };
    // The profile (ops called on this thread, in its phase) shows which ops ran.
    kiln_tensor::profile::enable(true);
    kiln_tensor::profile::set_phase("fused");
    let cpu = run(true, &Device::Cpu);
    kiln_tensor::profile::set_phase("unfused");
    let unfused = run(false, &Device::Cpu);
    let recorded = kiln_tensor::profile::take();
    kiln_tensor::profile::enable(false);
    let ran = |phase: &str| -> Vec<&str> { recorded.phase(phase).unwrap().ops.iter().map(|op| op.name).collect() };
    let (fused_ops, unfused_ops) = (ran("fused"), ran("unfused"));
    assert!(fused_ops.contains(&"conv2d_relu_max_pool2d") && !fused_ops.contains(&"max_pool2d"), "{fused_ops:?}");
    assert!(fused_ops.contains(&"conv2d_relu_max_pool2d_backward"), "{fused_ops:?}");
    assert!(!unfused_ops.contains(&"conv2d_relu_max_pool2d") && unfused_ops.contains(&"max_pool2d"), "{unfused_ops:?}");
    // The bias gradients are summed over the pooled gradient rather than the full one.
    let close = |got: &[f32], want: &[f32], tolerance: f32| {
        got.len() == want.len() && got.iter().zip(want).all(|(g, c)| (g - c).abs() <= tolerance * c.abs().max(1.0))
    };
    assert!(close(&cpu, &unfused, 1e-6));
    let Some(ctx) = context_or_skip("sequential_fuses_conv_relu_and_max_pool_with_the_same_result") else {
        return;
    };
    let gpu = Device::Gpu(ctx);
    for fused in [true, false] {
        assert!(close(&run(fused, &gpu), &cpu, 1e-4), "fused: {fused}");
    }
}

/// conv → batch norm → ReLU → max pool, twice (the ASL CNN's block), then a linear layer;
/// the pooling recognised by `Sequential` or not.
fn batch_norm_pool_model(fused: bool) -> Sequential {
    let mut seeds = Seeds::new(6);
    let pool = |model: Sequential| if fused { model.add(kiln_nn::MaxPool2d::new(2)) } else { model.add(SeparatePool) };
    let block = |model: Sequential, inputs, outputs, seeds: &mut Seeds| {
        let conv = kiln_nn::Conv2d::new(inputs, outputs, 3, seeds).unwrap().padding(1);
        pool(model.add(conv).add(kiln_nn::BatchNorm2d::new(outputs).unwrap()).add(kiln_nn::ReLU))
    };
    let model = block(block(Sequential::new(), 1, 3, &mut seeds), 3, 4, &mut seeds);
    model.add(kiln_nn::Flatten::new()).add(kiln_nn::Linear::new(36, 4, &mut seeds).unwrap())
}

#[test]
fn sequential_fuses_batch_norm_relu_and_max_pool_in_training_with_the_same_result() {
    // 14×14 pooled twice leaves 3×3: the second pooling drops a row and a column.
    let images = Tensor::randn(&[5, 1, 14, 14], 9, &Device::Cpu).unwrap();
    let labels = Tensor::from_vec_i32(vec![0, 1, 2, 3, 1], &[5], &Device::Cpu).unwrap();
    let run = |fused: bool, device: &Device| step_values(&mut batch_norm_pool_model(fused), &images, &labels, device);
    kiln_tensor::profile::enable(true);
    kiln_tensor::profile::set_phase("fused");
    let cpu = run(true, &Device::Cpu);
    kiln_tensor::profile::set_phase("unfused");
    let unfused = run(false, &Device::Cpu);
    kiln_tensor::profile::set_phase("evaluation");
    let evaluate = |fused: bool| {
        let mut model = batch_norm_pool_model(fused);
        model.eval();
        model.forward(&Var::constant(images.clone())).unwrap().value().to_vec().unwrap()
    };
    let (evaluated, evaluated_unfused) = (evaluate(true), evaluate(false));
    let recorded = kiln_tensor::profile::take();
    kiln_tensor::profile::enable(false);
    let ran = |phase: &str| -> Vec<&str> { recorded.phase(phase).unwrap().ops.iter().map(|op| op.name).collect() };
    let (fused_ops, unfused_ops) = (ran("fused"), ran("unfused"));
    assert!(fused_ops.contains(&"batch_norm2d_relu_max_pool2d") && !fused_ops.contains(&"max_pool2d"), "{fused_ops:?}");
    assert!(fused_ops.contains(&"batch_norm2d_relu_max_pool2d_backward"), "{fused_ops:?}");
    assert!(!unfused_ops.contains(&"batch_norm2d_relu_max_pool2d"), "{unfused_ops:?}");
    // Evaluation normalises with the running statistics: batch norm with its ReLU, then the pooling.
    assert!(!ran("evaluation").contains(&"batch_norm2d_relu_max_pool2d"), "{:?}", ran("evaluation"));
    assert_eq!(evaluated, evaluated_unfused);
    // The same ops in the same order: the same bits, running statistics included.
    assert_eq!(cpu, unfused);
    let Some(ctx) = context_or_skip("sequential_fuses_batch_norm_relu_and_max_pool_in_training_with_the_same_result")
    else {
        return;
    };
    let gpu = Device::Gpu(ctx);
    for fused in [true, false] {
        let got = run(fused, &gpu);
        assert!(got.iter().zip(&cpu).all(|(g, c)| (g - c).abs() <= 1e-4 * c.abs().max(1.0)), "fused: {fused}");
    }
}

/// A `Sequential`'s layers by index and in order, as `model[i]` and `for layer in model`.
#[test]
fn sequential_layers_are_reached_by_index_and_in_order() {
    let mut model = models::asl_mlp(&mut Seeds::new(0)).unwrap();
    let described: Vec<String> = model.iter().map(|layer| layer.describe()).collect();
    assert_eq!(described.len(), model.len());
    assert_eq!(described[1], "Linear(in_features=784, out_features=512, bias=True)");
    assert_eq!(model.get(1).unwrap().parameters()[0].1.value().shape(), [512, 784]);
    assert!(model.get(model.len()).is_none() && model.get_mut(model.len()).is_none());

    // Through get_mut the layer itself changes: its weights, seen through the model's names.
    let weight = model.parameters().into_iter().find(|(name, _)| name == "1.weight").unwrap().1;
    let layer = model.get_mut(1).unwrap();
    let mut state = kiln_nn::state_dict(layer).unwrap();
    state.insert("weight".into(), Tensor::zeros(&[512, 784], &Device::Cpu).unwrap());
    kiln_nn::load_into(layer, &state).unwrap();
    assert!(weight.value().to_vec().unwrap().iter().all(|&w| w == 0.0));
}
