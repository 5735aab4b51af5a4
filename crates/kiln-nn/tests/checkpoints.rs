//! Checkpoints: safetensors files with PyTorch's key names, both ways (fixtures made by
//! fixtures/make_checkpoints.py), the first training steps against PyTorch's from the same
//! weights, round trips, and checkpoints that do not fit.

mod common;

use std::path::PathBuf;

use common::{asl_cnn, mini_cnn};
use kiln_autograd::{Var, no_grad};
use kiln_nn::{CrossEntropyLoss, Module, Sequential};
use kiln_optim::{Adam, Optimizer};
use kiln_tensor::{Device, Tensor};
use kiln_wgsl::testing::context_or_skip;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("checkpoints.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Images stored as bytes 0..255 in the fixture, scaled to [0, 1] as both frameworks do.
fn images(v: &Value, device: &Device) -> Tensor {
    let pixels: Vec<f32> = v["pixels"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as f32 / 255.0).collect();
    let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    Tensor::from_vec(pixels, &shape, device).unwrap()
}

fn eval_logits(model: &mut Sequential, x: &Tensor) -> Vec<f32> {
    model.eval();
    no_grad(|| model.forward(&Var::constant(x.clone())).unwrap().value().to_vec().unwrap())
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{what}: kiln {g}, PyTorch {w}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-nn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kiln writes the ASL CNN (seed 0) to exactly the committed file that the fixture script
/// loaded into PyTorch's `nn.Sequential`; PyTorch's logits from it match Kiln's.
/// With KILN_WRITE_FIXTURES=1 this writes that file instead (then rerun the script).
#[test]
fn kiln_checkpoints_load_in_pytorch() {
    let model = asl_cnn(0, 1.0);
    let committed = fixtures().join("kiln_asl_cnn.safetensors");
    if std::env::var("KILN_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
        kiln_nn::save(&model, &committed).unwrap();
        return;
    }
    let written = scratch("kiln-to-torch").join("model.safetensors");
    kiln_nn::save(&model, &written).unwrap();
    assert!(
        std::fs::read(&written).unwrap() == std::fs::read(&committed).unwrap(),
        "Kiln no longer writes the file PyTorch read"
    );
    let case = &expected()["kiln_to_torch"];
    let mut model = model;
    let logits = eval_logits(&mut model, &images(&case["input"], &Device::Cpu));
    assert_close(&logits, &floats(&case["logits"]), 1e-4, "logits of Kiln's weights");
}

/// A checkpoint PyTorch saved (after one training-mode pass, so the running statistics
/// moved) loads into the same Kiln model and gives PyTorch's logits.
#[test]
fn pytorch_checkpoints_load_in_kiln() {
    let case = &expected()["torch_to_kiln"];
    let mut model = mini_cnn(99);
    kiln_nn::load(&mut model, &fixtures().join("torch_mini_cnn.safetensors")).unwrap();
    let logits = eval_logits(&mut model, &images(&case["input"], &Device::Cpu));
    assert_close(&logits, &floats(&case["logits"]), 1e-4, "logits of PyTorch's weights");
    let tracked = kiln_nn::state_dict(&model).unwrap()["1.num_batches_tracked"].to_vec_i32().unwrap();
    assert_eq!(tracked, vec![1]);
}

/// Three Adam steps of the ASL CNN (dropout off) from the same weights and batch give
/// PyTorch's losses, on the CPU and on the GPU.
#[test]
fn first_training_steps_follow_pytorch() {
    let case = &expected()["trajectory"];
    let labels: Vec<i32> = case["labels"].as_array().unwrap().iter().map(|l| l.as_i64().unwrap() as i32).collect();
    let mut devices = vec![Device::Cpu];
    devices.extend(context_or_skip("first_training_steps_follow_pytorch").map(Device::Gpu));
    for device in devices {
        let mut model = asl_cnn(0, 0.0);
        model.to_device(&device).unwrap();
        let x = Var::constant(images(&case["input"], &device));
        let y = Tensor::from_vec_i32(labels.clone(), &[labels.len()], &device).unwrap();
        let mut optimizer = Adam::new(model.parameters().into_iter().map(|(_, p)| p).collect(), 1e-3);
        let losses: Vec<f32> = (0..3)
            .map(|_| {
                optimizer.zero_grad();
                let loss = CrossEntropyLoss::new().forward(&model.forward(&x).unwrap(), &y).unwrap();
                loss.backward().unwrap();
                optimizer.step().unwrap();
                loss.value().to_scalar().unwrap()
            })
            .collect();
        assert_close(&losses, &floats(&case["losses"]), 1e-4, &format!("losses on {device}"));
    }
}

#[test]
fn a_saved_model_loads_back_exactly() {
    let mut trained = mini_cnn(1);
    let x = Var::constant(Tensor::rand(&[4, 1, 28, 28], 2, &Device::Cpu).unwrap());
    trained.forward(&x).unwrap(); // moves the running statistics
    let path = scratch("round-trip").join("mini.safetensors");
    kiln_nn::save(&trained, &path).unwrap();
    let mut restored = mini_cnn(2);
    kiln_nn::load(&mut restored, &path).unwrap();
    let (a, b) = (trained.state_dict().unwrap(), restored.state_dict().unwrap());
    let mut copy = mini_cnn(3);
    copy.load_state_dict(&a).unwrap();
    assert_eq!(copy.state_dict().unwrap()["5.weight"].to_vec().unwrap(), a["5.weight"].to_vec().unwrap());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        let same = match t.dtype() {
            kiln_tensor::DType::I32 => t.to_vec_i32().unwrap() == b[name].to_vec_i32().unwrap(),
            _ => t.to_vec().unwrap() == b[name].to_vec().unwrap(),
        };
        assert!(same, "{name}");
    }
}

#[test]
fn checkpoints_that_do_not_fit_are_refused_whole() {
    let dir = scratch("misfits");
    let path = dir.join("mini.safetensors");
    let model = mini_cnn(1);
    let mut state = kiln_nn::state_dict(&model).unwrap();
    state.remove("5.bias");
    state.insert("6.weight".into(), Tensor::zeros(&[2], &Device::Cpu).unwrap());
    state.insert("0.weight".into(), Tensor::zeros(&[4, 1, 5, 5], &Device::Cpu).unwrap());
    kiln_nn::save_state_dict(&state, &path).unwrap();
    let mut target = mini_cnn(2);
    let before = kiln_nn::state_dict(&target).unwrap()["0.bias"].to_vec().unwrap();
    let err = kiln_nn::load(&mut target, &path).unwrap_err().to_string();
    for part in ["missing '5.bias'", "unexpected '6.weight'", "'0.weight' is F32 [4, 1, 5, 5]"] {
        assert!(err.contains(part), "{err}");
    }
    assert_eq!(kiln_nn::state_dict(&target).unwrap()["0.bias"].to_vec().unwrap(), before, "nothing loaded");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    assert!(kiln_nn::load(&mut target, &garbage).unwrap_err().to_string().contains("garbage.safetensors"));
    let nowhere = dir.join("missing-dir/model.safetensors");
    assert!(kiln_nn::save(&model, &nowhere).is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "a failed save leaves no temporary file");
}

/// PyTorch's `load_state_dict(strict=False)`: a checkpoint with another head loads its
/// body, the head keeps its values, and the report names both sides' leftovers; on the GPU
/// too. A tensor of the wrong shape is still refused, naming its key, and changes nothing.
#[test]
fn non_strict_loading_takes_what_fits_and_names_the_rest() {
    let mut source = mini_cnn(1);
    // Trained statistics, so a loaded buffer differs from a fresh one.
    source.forward(&Var::constant(Tensor::randn(&[2, 1, 28, 28], 3, &Device::Cpu).unwrap())).unwrap();
    let mut state = kiln_nn::state_dict(&source).unwrap();
    state.remove("5.weight");
    state.remove("5.bias");
    state.insert("6.weight".into(), Tensor::zeros(&[24, 784], &Device::Cpu).unwrap());

    let mut devices = vec![Device::Cpu];
    devices.extend(context_or_skip("non_strict_loading_takes_what_fits_and_names_the_rest").map(Device::Gpu));
    for device in devices {
        let mut target = mini_cnn(2);
        target.to_device(&device).unwrap();
        let before = kiln_nn::state_dict(&target).unwrap();
        let report = target.load_state_dict_non_strict(&state).unwrap();
        assert_eq!(report.missing_keys, ["5.bias", "5.weight"], "{device:?}");
        assert_eq!(report.unexpected_keys, ["6.weight"], "{device:?}");
        let after = kiln_nn::state_dict(&target).unwrap();
        // Every entry compared as f32 (num_batches_tracked is an i32 count).
        let values =
            |t: &Tensor| t.to_vec().unwrap_or_else(|_| t.to_vec_i32().unwrap().iter().map(|&v| v as f32).collect());
        for (key, value) in &after {
            let want = if key.starts_with("5.") { &before[key] } else { &state[key] };
            assert_eq!(values(value), values(want), "{device:?}: {key}");
        }
        assert_eq!(values(&after["1.num_batches_tracked"]), [1.0], "{device:?}");
        assert_ne!(after["1.running_mean"].to_vec().unwrap(), before["1.running_mean"].to_vec().unwrap());
        assert_eq!(target.parameters()[0].1.value().device(), device, "values stay on the model's device");

        let mut misfit = state.clone();
        misfit.insert("0.weight".into(), Tensor::zeros(&[4, 1, 5, 5], &Device::Cpu).unwrap());
        let mut fresh = mini_cnn(2);
        let err = fresh.load_state_dict_non_strict(&misfit).unwrap_err().to_string();
        assert!(err.contains("'0.weight' is F32 [4, 1, 5, 5]") && !err.contains("missing"), "{err}");
        assert_eq!(
            kiln_nn::state_dict(&fresh).unwrap()["0.bias"].to_vec().unwrap(),
            before["0.bias"].to_vec().unwrap()
        );
    }
}

#[test]
fn optimizer_state_travels_in_the_same_files() {
    let mut model = mini_cnn(3);
    let x = Var::constant(Tensor::rand(&[2, 1, 28, 28], 4, &Device::Cpu).unwrap());
    let y = Tensor::from_vec_i32(vec![1, 7], &[2], &Device::Cpu).unwrap();
    let mut adam = Adam::new(model.parameters().into_iter().map(|(_, p)| p).collect(), 1e-2);
    CrossEntropyLoss::new().forward(&model.forward(&x).unwrap(), &y).unwrap().backward().unwrap();
    adam.step().unwrap();
    let path = scratch("optimizer").join("adam.safetensors");
    kiln_nn::save_state_dict(&adam.state().unwrap(), &path).unwrap();
    let restored = kiln_nn::load_state_dict(&path).unwrap();
    let saved = adam.state().unwrap();
    assert_eq!(restored.keys().collect::<Vec<_>>(), saved.keys().collect::<Vec<_>>());
    let mut fresh = Adam::new(model.parameters().into_iter().map(|(_, p)| p).collect(), 1.0);
    fresh.load_state(&restored).unwrap();
    assert_eq!(fresh.lr(), 1e-2);
}
