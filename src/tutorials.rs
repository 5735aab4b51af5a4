//! The classic tutorials Kiln reproduces, each as a recipe: its dataset, model, optimizer,
//! batch size, epochs and input scaling, as the tutorial sets them. The examples, the
//! end-to-end tests and `cargo xtask bench --train` all read their settings from here, so
//! they cannot drift apart.

use std::path::Path;

use kiln_autograd::Var;
use kiln_data::presets::{self, Split};
use kiln_data::{DataLoader, ImageDataset, Transform, read_cifar10};
use kiln_nn::{Init, Module, Seeds, Sequential, models};
use kiln_optim::{Adam, Optimizer, Sgd};
use kiln_tensor::Device;

use crate::training::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tutorial {
    /// NVIDIA DLI's American Sign Language CNN: Adam 1e-3, batch 32, 20 epochs.
    AslCnn,
    /// NVIDIA DLI's American Sign Language MLP: Adam 1e-3, batch 32, 20 epochs.
    AslMlp,
    /// The PyTorch Fashion-MNIST CNN (an `nn.Module`): Adam 1e-3, batch 256, 20 epochs.
    FashionMnistCnn,
    /// PyTorch's quickstart on Fashion-MNIST: SGD 1e-3, batch 64, 5 epochs, unshuffled
    /// (its `DataLoader` is built without `shuffle=True`).
    FashionMnistMlp,
    /// TensorFlow's beginner quickstart on MNIST: Adam 1e-3, batch 32, 5 epochs.
    MnistMlp,
    /// PyTorch's CIFAR-10 classifier tutorial: SGD 1e-3 with momentum 0.9, batch 4, 2
    /// epochs, pixels normalised to [-1, 1].
    Cifar10Lenet,
}

impl Tutorial {
    pub const ALL: [Tutorial; 6] = [
        Tutorial::AslCnn,
        Tutorial::AslMlp,
        Tutorial::FashionMnistCnn,
        Tutorial::FashionMnistMlp,
        Tutorial::MnistMlp,
        Tutorial::Cifar10Lenet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tutorial::AslCnn => "asl_cnn",
            Tutorial::AslMlp => "asl_mlp",
            Tutorial::FashionMnistCnn => "fashion_mnist_cnn",
            Tutorial::FashionMnistMlp => "fashion_mnist_mlp",
            Tutorial::MnistMlp => "mnist_mlp",
            Tutorial::Cifar10Lenet => "cifar10_lenet",
        }
    }

    /// The conventional name of the dataset's directory (as in `../shared/data`).
    pub fn dataset_dir(self) -> &'static str {
        match self {
            Tutorial::AslCnn | Tutorial::AslMlp => "sign-language-mnist",
            Tutorial::FashionMnistCnn | Tutorial::FashionMnistMlp => "fashion-mnist",
            Tutorial::MnistMlp => "mnist",
            Tutorial::Cifar10Lenet => "cifar-10",
        }
    }

    pub fn batch_size(self) -> usize {
        match self {
            Tutorial::AslCnn | Tutorial::AslMlp | Tutorial::MnistMlp => 32,
            Tutorial::FashionMnistCnn => 256,
            Tutorial::FashionMnistMlp => 64,
            Tutorial::Cifar10Lenet => 4,
        }
    }

    pub fn epochs(self) -> usize {
        match self {
            Tutorial::AslCnn | Tutorial::AslMlp | Tutorial::FashionMnistCnn => 20,
            Tutorial::FashionMnistMlp | Tutorial::MnistMlp => 5,
            Tutorial::Cifar10Lenet => 2,
        }
    }

    pub fn shuffle(self) -> bool {
        self != Tutorial::FashionMnistMlp
    }

    /// How the tutorial's framework starts its layers: Keras's for TensorFlow's MNIST
    /// quickstart, PyTorch's defaults for the others.
    pub fn init(self) -> Init {
        match self {
            Tutorial::MnistMlp => Init::Keras,
            _ => Init::PyTorch,
        }
    }

    /// The tutorial's model, initialised from `seed` as its framework does.
    pub fn model(self, seed: u64) -> Result<Sequential> {
        self.model_with(seed, self.init())
    }

    /// The tutorial's model, initialised from `seed` as `init` says.
    pub fn model_with(self, seed: u64, init: Init) -> Result<Sequential> {
        let seeds = &mut Seeds::new(seed);
        let model = match self {
            Tutorial::AslCnn => models::asl_cnn(seeds, 1.0)?,
            Tutorial::AslMlp => models::asl_mlp(seeds)?,
            Tutorial::FashionMnistCnn => models::fashion_mnist_cnn(seeds)?,
            Tutorial::FashionMnistMlp => models::fashion_mnist_mlp(seeds)?,
            Tutorial::MnistMlp => models::mnist_mlp(seeds)?,
            Tutorial::Cifar10Lenet => models::cifar10_lenet(seeds)?,
        };
        init.apply(&model, seeds)?;
        Ok(model)
    }

    /// The tutorial's learning rate.
    pub fn lr(self) -> f32 {
        1e-3
    }

    /// The tutorial's optimizer over `model`'s parameters, with learning rate `lr`.
    pub fn optimizer(self, model: &dyn Module, lr: f32) -> Box<dyn Optimizer> {
        self.optimizer_with(model, lr, 0.0)
    }

    /// [`Tutorial::optimizer`] with weight decay (an L2 term added to the gradients, as
    /// `weight_decay` in torch.optim's SGD and Adam).
    pub fn optimizer_with(self, model: &dyn Module, lr: f32, weight_decay: f32) -> Box<dyn Optimizer> {
        let parameters: Vec<Var> = model.parameters().into_iter().map(|(_, p)| p).collect();
        match self {
            Tutorial::FashionMnistMlp => Box::new(Sgd::new(parameters, lr).weight_decay(weight_decay)),
            Tutorial::Cifar10Lenet => Box::new(Sgd::new(parameters, lr).momentum(0.9).weight_decay(weight_decay)),
            _ => Box::new(Adam::new(parameters, lr).weight_decay(weight_decay)),
        }
    }

    /// How the tutorial turns pixels into the model's input.
    pub fn transform(self) -> Transform {
        match self {
            Tutorial::Cifar10Lenet => Transform::to_float().normalize(&[0.5; 3], &[0.5; 3]),
            _ => Transform::to_float(),
        }
    }

    /// The training and test (validation) sets from the dataset's files in whichever layout
    /// the user has them: the Sign Language MNIST CSVs; the (Fashion-)MNIST IDX files, also
    /// in torchvision's `raw` folders, Keras's `mnist.npz` or Kaggle's Fashion-MNIST CSVs;
    /// CIFAR-10's binary or Python batches, unpacked or in their official archives.
    pub fn datasets(self, path: &Path) -> Result<(ImageDataset, ImageDataset)> {
        Ok(match self {
            Tutorial::AslCnn | Tutorial::AslMlp => presets::sign_language_mnist_dir(path)?,
            Tutorial::FashionMnistCnn | Tutorial::FashionMnistMlp => presets::fashion_mnist_from(path)?,
            Tutorial::MnistMlp => presets::mnist_from(path)?,
            Tutorial::Cifar10Lenet => (read_cifar10(path, Split::Train)?, read_cifar10(path, Split::Test)?),
        })
    }

    /// [`Tutorial::transform`] with random augmentation that suits the images — an option
    /// beyond the tutorials, which train without: for the signs, the DLI course's own
    /// (rotation, zoom, shift, brightness, contrast); for clothes, mirroring; for digits,
    /// shifts of up to 2 whole pixels (never mirroring, which changes a digit); for CIFAR-10,
    /// mirroring and shifts of up to 4 pixels (torchvision's usual `RandomCrop(32, 4)`).
    pub fn augmented_transform(self) -> Transform {
        let plain = self.transform();
        match self {
            Tutorial::AslCnn | Tutorial::AslMlp => {
                plain.rotation(10.0).zoom(0.1).shift(0.1).brightness(0.2).contrast(0.5)
            }
            Tutorial::FashionMnistCnn | Tutorial::FashionMnistMlp => plain.horizontal_flip(true),
            Tutorial::MnistMlp => plain.shift_pixels(2),
            Tutorial::Cifar10Lenet => plain.horizontal_flip(true).shift_pixels(4),
        }
    }

    /// The training loader (shuffled by `seed` when the tutorial shuffles; augmented with
    /// [`Tutorial::augmented_transform`] when `augment` is set) and the test loader, both
    /// with the tutorial's batch size and transform. On a GPU the datasets are uploaded once
    /// and batches are gathered there, except augmented training batches, which are made on
    /// the host.
    pub fn loaders(
        self,
        train: &ImageDataset,
        test: &ImageDataset,
        device: &Device,
        seed: u64,
        augment: bool,
    ) -> Result<(DataLoader, DataLoader)> {
        self.loaders_of(train, test, device, seed, augment, self.batch_size())
    }

    /// [`Tutorial::loaders`] at another batch size: a data-parallel process's share of the
    /// tutorial's batch, say.
    pub fn loaders_of(
        self,
        train: &ImageDataset,
        test: &ImageDataset,
        device: &Device,
        seed: u64,
        augment: bool,
        batch_size: usize,
    ) -> Result<(DataLoader, DataLoader)> {
        let transform = if augment { self.augmented_transform() } else { self.transform() };
        let train_loader = DataLoader::on_device(train, batch_size, device, transform)?;
        let test_loader = DataLoader::on_device(test, batch_size, device, self.transform())?;
        Ok((train_loader.shuffle(self.shuffle()).seed(seed), test_loader))
    }
}

impl std::fmt::Display for Tutorial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tutorial {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Tutorial::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Tutorial::ALL.iter().map(|t| t.name()).collect();
            format!("unknown tutorial {s:?}; one of {}", names.join(", "))
        })
    }
}
