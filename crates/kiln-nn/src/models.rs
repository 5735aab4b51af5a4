//! The tutorials' models, layer for layer as their notebooks define them.

use crate::{BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Result, Seeds, Sequential};

/// NVIDIA DLI's American Sign Language MLP: 784 → 512 → 512 → 24 with ReLUs.
pub fn asl_mlp(seeds: &mut Seeds) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Flatten::new())
        .add(Linear::new(784, 512, seeds)?)
        .add(ReLU)
        .add(Linear::new(512, 512, seeds)?)
        .add(ReLU)
        .add(Linear::new(512, 24, seeds)?))
}

/// NVIDIA DLI's American Sign Language CNN: three blocks of 3×3 convolution (25, 50, 75
/// channels, padding 1), batch norm, ReLU and 2×2 max pooling (dropout 0.2 in the second),
/// then 675 → 512 (dropout 0.3) → 24. `dropout` scales both probabilities: 1 as the
/// notebook, 0 to turn dropout off; the weights do not depend on it.
pub fn asl_cnn(seeds: &mut Seeds, dropout: f32) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Conv2d::new(1, 25, 3, seeds)?.padding(1))
        .add(BatchNorm2d::new(25)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(25, 50, 3, seeds)?.padding(1))
        .add(BatchNorm2d::new(50)?)
        .add(ReLU)
        .add(Dropout::new(0.2 * dropout, seeds))
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(50, 75, 3, seeds)?.padding(1))
        .add(BatchNorm2d::new(75)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Linear::new(675, 512, seeds)?)
        .add(Dropout::new(0.3 * dropout, seeds))
        .add(ReLU)
        .add(Linear::new(512, 24, seeds)?))
}
