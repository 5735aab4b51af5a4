//! What the asl-app tests share.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use asl_app::{DeviceChoice, ModelKind, TrainConfig};

/// A run of `model` for `epochs` on the first `limit` samples of the bundled data, on the
/// CPU, into a fresh directory named after `name`.
pub fn config(name: &str, model: ModelKind, epochs: usize, limit: usize) -> TrainConfig {
    let out = std::env::temp_dir().join(format!("asl-app-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    TrainConfig {
        model,
        epochs,
        batch_size: 32,
        lr: 1e-3,
        weight_decay: 0.0,
        scheduler: None,
        seed: 7,
        device: DeviceChoice::Cpu,
        augment: false,
        data: asl_app::bundled_data(),
        out,
        resume: false,
        overwrite: false,
        limit: Some(limit),
        stop: None,
        tensorboard: None,
    }
}
