//! The tutorials' models, layer for layer as their notebooks define them, and the residual
//! block of the CIFAR-10 ResNets that PyTorch tutorials build.

use kiln_autograd::Var;

use crate::export::{GraphBuilder, export_child};
use crate::{
    AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU, Result, Seeds,
    Sequential,
};

/// NVIDIA DLI's American Sign Language MLP: 784 → 512 → 512 → 24 with ReLUs.
pub fn asl_mlp(seeds: &mut Seeds) -> Result<Sequential> {
    two_hidden_512(24, seeds)
}

/// Flatten, then 784 → 512 → 512 → `classes` with ReLUs: the MLP of the ASL notebook and of
/// PyTorch's quickstart.
fn two_hidden_512(classes: usize, seeds: &mut Seeds) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Flatten::new())
        .add(Linear::new(784, 512, seeds)?)
        .add(ReLU)
        .add(Linear::new(512, 512, seeds)?)
        .add(ReLU)
        .add(Linear::new(512, classes, seeds)?))
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

/// The Fashion-MNIST CNN of the PyTorch tutorial's `nn.Module`: 5×5 convolutions with 32
/// and 64 channels (no padding), each followed by ReLU and 2×2 max pooling, dropout 0.3,
/// then 1024 → 512 → 10; PyTorch's default initialisation (for Keras's, [`crate::Init`]).
pub fn fashion_mnist_cnn(seeds: &mut Seeds) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Conv2d::new(1, 32, 5, seeds)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 5, seeds)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Dropout::new(0.3, seeds))
        .add(Flatten::new())
        .add(Linear::new(1024, 512, seeds)?)
        .add(ReLU)
        .add(Linear::new(512, 10, seeds)?))
}

/// The MLP of PyTorch's quickstart on Fashion-MNIST: 784 → 512 → 512 → 10 with ReLUs.
pub fn fashion_mnist_mlp(seeds: &mut Seeds) -> Result<Sequential> {
    two_hidden_512(10, seeds)
}

/// The MLP of TensorFlow's beginner quickstart on MNIST: 784 → 128, ReLU, dropout 0.2, → 10.
pub fn mnist_mlp(seeds: &mut Seeds) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Flatten::new())
        .add(Linear::new(784, 128, seeds)?)
        .add(ReLU)
        .add(Dropout::new(0.2, seeds))
        .add(Linear::new(128, 10, seeds)?))
}

/// The LeNet of PyTorch's CIFAR-10 tutorial: 5×5 convolutions with 6 and 16 channels, each
/// followed by ReLU and 2×2 max pooling, then 400 → 120 → 84 → 10 with ReLUs.
pub fn cifar10_lenet(seeds: &mut Seeds) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Conv2d::new(3, 6, 5, seeds)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(6, 16, 5, seeds)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Linear::new(400, 120, seeds)?)
        .add(ReLU)
        .add(Linear::new(120, 84, seeds)?)
        .add(ReLU)
        .add(Linear::new(84, 10, seeds)?))
}

/// A residual block as the CIFAR-10 ResNets of PyTorch tutorials write it:
/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, with 3×3 convolutions without bias,
/// and as shortcut a 1×1 convolution with batch norm where the block changes the image size
/// or the channels, else the identity (an empty `Sequential`, as PyTorch's `nn.Sequential()`).
/// Written as a user's module is: its fields, [`crate::children!`], `forward`. Its state dict
/// has PyTorch's keys (`conv1.weight`, `bn1.running_mean`, `shortcut.0.weight`, …).
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    pub conv2: Conv2d,
    pub bn2: BatchNorm2d,
    pub shortcut: Sequential,
}

impl BasicBlock {
    pub fn new(inputs: usize, outputs: usize, stride: usize, seeds: &mut Seeds) -> Result<Self> {
        let conv = |inputs, kernel, seeds: &mut Seeds| -> Result<Conv2d> {
            Ok(Conv2d::new(inputs, outputs, kernel, seeds)?.without_bias())
        };
        let conv1 = conv(inputs, 3, seeds)?.stride(stride).padding(1);
        let conv2 = conv(outputs, 3, seeds)?.padding(1);
        let shortcut = if stride == 1 && inputs == outputs {
            Sequential::new()
        } else {
            Sequential::new().add(conv(inputs, 1, seeds)?.stride(stride)).add(BatchNorm2d::new(outputs)?)
        };
        let (bn1, bn2) = (BatchNorm2d::new(outputs)?, BatchNorm2d::new(outputs)?);
        Ok(Self { conv1, bn1, conv2, bn2, shortcut })
    }
}

impl Module for BasicBlock {
    crate::children!(conv1, bn1, conv2, bn2, shortcut);

    fn forward(&mut self, x: &Var) -> Result<Var> {
        let y = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let y = self.bn2.forward(&self.conv2.forward(&y)?)?;
        Ok(y.add(&self.shortcut.forward(x)?)?.relu()?)
    }

    /// The forward pass, written as operators.
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let y = export_child(graph, "conv1", &self.conv1, x)?;
        let y = export_child(graph, "bn1", &self.bn1, &y)?;
        let y = graph.node("Relu", &[&y], &[]);
        let y = export_child(graph, "conv2", &self.conv2, &y)?;
        let y = export_child(graph, "bn2", &self.bn2, &y)?;
        let shortcut = export_child(graph, "shortcut", &self.shortcut, x)?;
        let sum = graph.node("Add", &[&y, &shortcut], &[]);
        Ok(graph.node("Relu", &[&sum], &[]))
    }
}

/// A small ResNet for CIFAR-10: He et al.'s CIFAR ResNet with one [`BasicBlock`] per stage
/// (ResNet-8). A 3×3 convolution to 16 channels with batch norm and ReLU, blocks of 16, 32
/// and 64 channels (the last two halving the image), global average pooling, and a linear
/// layer to 10 classes: 78,042 parameters.
pub fn cifar10_resnet(seeds: &mut Seeds) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Conv2d::new(3, 16, 3, seeds)?.padding(1).without_bias())
        .add(BatchNorm2d::new(16)?)
        .add(ReLU)
        .add(BasicBlock::new(16, 16, 1, seeds)?)
        .add(BasicBlock::new(16, 32, 2, seeds)?)
        .add(BasicBlock::new(32, 64, 2, seeds)?)
        .add(AdaptiveAvgPool2d::new(1))
        .add(Flatten::new())
        .add(Linear::new(64, 10, seeds)?))
}
