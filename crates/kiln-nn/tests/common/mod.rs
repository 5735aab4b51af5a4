//! The tutorials' ASL models, as the DLI notebooks define them, for the tests.
// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use kiln_nn::{BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Seeds, Sequential};

/// The ASL MLP: 784 → 512 → 512 → 24.
pub fn asl_mlp(seed: u64) -> Sequential {
    let mut s = Seeds::new(seed);
    Sequential::new()
        .add(Flatten::new())
        .add(Linear::new(784, 512, &mut s).unwrap())
        .add(ReLU)
        .add(Linear::new(512, 512, &mut s).unwrap())
        .add(ReLU)
        .add(Linear::new(512, 24, &mut s).unwrap())
}

/// The ASL CNN: three conv blocks, dropout, 675 → 512 → 24. `dropout` scales both dropout
/// probabilities (1 for the notebook's 0.2 and 0.3, 0 to turn them off); the weights do not
/// depend on it.
pub fn asl_cnn(seed: u64, dropout: f32) -> Sequential {
    let mut s = Seeds::new(seed);
    Sequential::new()
        .add(Conv2d::new(1, 25, 3, &mut s).unwrap().padding(1))
        .add(BatchNorm2d::new(25).unwrap())
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(25, 50, 3, &mut s).unwrap().padding(1))
        .add(BatchNorm2d::new(50).unwrap())
        .add(ReLU)
        .add(Dropout::new(0.2 * dropout, &mut s))
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(50, 75, 3, &mut s).unwrap().padding(1))
        .add(BatchNorm2d::new(75).unwrap())
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Linear::new(675, 512, &mut s).unwrap())
        .add(Dropout::new(0.3 * dropout, &mut s))
        .add(ReLU)
        .add(Linear::new(512, 24, &mut s).unwrap())
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
