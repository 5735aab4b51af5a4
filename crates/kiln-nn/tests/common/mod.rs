//! Models for the tests: the ASL models from a root seed, and a small CNN for checkpoints.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use kiln_nn::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Seeds, Sequential, models};

/// The ASL MLP (see `kiln_nn::models::asl_mlp`) from a root seed.
pub fn asl_mlp(seed: u64) -> Sequential {
    models::asl_mlp(&mut Seeds::new(seed)).unwrap()
}

/// The ASL CNN (see `kiln_nn::models::asl_cnn`) from a root seed.
pub fn asl_cnn(seed: u64, dropout: f32) -> Sequential {
    models::asl_cnn(&mut Seeds::new(seed), dropout).unwrap()
}

/// A small model with every layer type that has state, for checkpoint files.
pub fn mini_cnn(seed: u64) -> Sequential {
    let mut s = Seeds::new(seed);
    Sequential::new()
        .add(Conv2d::new(1, 4, 3, &mut s).unwrap().padding(1))
        .add(BatchNorm2d::new(4).unwrap())
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Linear::new(784, 10, &mut s).unwrap())
}
