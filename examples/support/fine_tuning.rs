//! Fine-tuning as PyTorch's transfer-learning recipe does it: a CNN trained on Fashion-MNIST
//! and saved; its convolutions loaded, non-strictly, into a model with a new 10-class head;
//! those convolutions frozen; the head trained on MNIST. Shared by the `fine_tune` example
//! and the facade's tests/fine_tuning.rs, which includes this file.

use std::path::Path;

use kiln::Device;
use kiln::autograd::Var;
use kiln::data::presets;
use kiln::data::{DataLoader, ImageDataset, Transform};
use kiln::distributed::World;
use kiln::nn::{Conv2d, CrossEntropyLoss, Flatten, Linear, LoadReport, MaxPool2d, Module, ReLU, Seeds, Sequential};
use kiln::optim::Adam;
use kiln::schedules::{Schedule, ScheduleKind};
use kiln::training::{self, EpochMetrics};

use super::fitting::{self, Run};

/// Images per batch, in both phases (shared among the processes of a distributed run).
pub const BATCH: usize = 64;

/// Where a phase trains: the device, and the processes of a data-parallel run, if any.
pub struct Place<'a> {
    pub device: &'a Device,
    pub world: Option<&'a World>,
}

impl<'a> Place<'a> {
    /// One process on `device`.
    pub fn alone(device: &'a Device) -> Self {
        Self { device, world: None }
    }

    /// Whether this process reports: always, but for ranks other than 0 of a distributed run.
    pub fn reports(&self) -> bool {
        self.world.is_none_or(|world| world.rank() == 0)
    }
}

/// How each phase trains: `epochs` of Adam at `lr` with `weight_decay`, on `scheduler`'s
/// schedule.
pub struct Training {
    pub epochs: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub scheduler: Option<ScheduleKind>,
}

impl Default for Training {
    fn default() -> Self {
        Self { epochs: 2, lr: 1e-3, weight_decay: 0.0, scheduler: None }
    }
}

/// Two 5×5 convolutions (32 and 64 channels) with ReLU and 2×2 max pooling, flattened:
/// 1,024 features of a 28×28 image.
fn features(seeds: &mut Seeds) -> kiln::nn::Result<Sequential> {
    Ok(Sequential::new()
        .add(Conv2d::new(1, 32, 5, seeds)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(32, 64, 5, seeds)?)
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::new()))
}

/// The model pretrained on Fashion-MNIST: the features, then 1024 → 256 → 10.
pub struct Pretrained {
    pub features: Sequential,
    pub classifier: Sequential,
}

impl Pretrained {
    pub fn new(seed: u64) -> kiln::nn::Result<Self> {
        let seeds = &mut Seeds::new(seed);
        let features = features(seeds)?;
        let classifier =
            Sequential::new().add(Linear::new(1024, 256, seeds)?).add(ReLU).add(Linear::new(256, 10, seeds)?);
        Ok(Self { features, classifier })
    }
}

impl Module for Pretrained {
    kiln::nn::children!(features, classifier);

    fn forward(&mut self, input: &Var) -> kiln::nn::Result<Var> {
        self.classifier.forward(&self.features.forward(input)?)
    }
}

/// The fine-tuned model: the same features, and a new head (1024 → 10) for the digits.
pub struct FineTuned {
    pub features: Sequential,
    pub head: Linear,
}

impl FineTuned {
    pub fn new(seed: u64) -> kiln::nn::Result<Self> {
        let seeds = &mut Seeds::new(seed);
        Ok(Self { features: features(seeds)?, head: Linear::new(1024, 10, seeds)? })
    }
}

impl Module for FineTuned {
    kiln::nn::children!(features, head);

    fn forward(&mut self, input: &Var) -> kiln::nn::Result<Var> {
        self.head.forward(&self.features.forward(input)?)
    }
}

/// Fashion-MNIST and MNIST from a directory holding both: in `fashion-mnist` and `mnist`
/// directories (as `$KILN_DATA_DIR` does), or as torchvision's root holds them
/// (`FashionMNIST/raw`, `MNIST/raw`); each set cut to `limit` images when given.
pub fn both_datasets(root: &Path, limit: Option<usize>) -> kiln::data::Result<[(ImageDataset, ImageDataset); 2]> {
    let within = |dir: &str| if root.join(dir).is_dir() { root.join(dir) } else { root.to_path_buf() };
    let cut = |(train, test): (ImageDataset, ImageDataset)| match limit {
        Some(n) => (train.take(n), test.take(n)),
        None => (train, test),
    };
    Ok([cut(presets::fashion_mnist_from(&within("fashion-mnist"))?), cut(presets::mnist_from(&within("mnist"))?)])
}

/// Trains `model` as `training` says (Adam on its trainable parameters), printing each
/// epoch's figures with `label` (and logging them in `tensorboard`, if given), and returns
/// the last test metrics. In a distributed run, `model` becomes a replica of rank 0's and
/// each process trains and tests on its shares.
pub fn train(
    model: &mut dyn Module,
    data: &(ImageDataset, ImageDataset),
    place: &Place,
    seed: u64,
    training: &Training,
    label: &str,
    tensorboard: Option<&Path>,
) -> Result<EpochMetrics, Box<dyn std::error::Error>> {
    let (device, processes) = (place.device, place.world.map_or(1, World::size));
    if !BATCH.is_multiple_of(processes) {
        return Err(format!("a batch of {BATCH} cannot be shared equally by {processes} processes").into());
    }
    let batch = BATCH / processes;
    let mut train = DataLoader::on_device(&data.0, batch, device, Transform::to_float())?.shuffle(true).seed(seed);
    let mut test = DataLoader::on_device(&data.1, batch, device, Transform::to_float())?;
    if let Some(world) = place.world {
        world.replicate(model)?;
        train = train.shard(world.rank(), world.size())?;
        test = test.shard_unpadded(world.rank(), world.size())?;
    }
    // Only what trains, as PyTorch's `filter(lambda p: p.requires_grad, model.parameters())`.
    let trainable: Vec<Var> = model.parameters().into_iter().map(|(_, p)| p).filter(Var::requires_grad).collect();
    let mut optimizer = Adam::new(trainable, training.lr).weight_decay(training.weight_decay);
    let epochs = training.epochs;
    let mut schedule = training.scheduler.map(|kind| Schedule::new(kind, &mut optimizer, epochs, train.len()));
    let label = format!("{label} ");
    let run = Run {
        train: &train,
        test: &test,
        test_set: &data.1,
        epochs,
        label: &label,
        tensorboard,
        out: None,
        world: place.world,
    };
    let history = fitting::fit(model, &mut optimizer, schedule.as_mut(), &run)?;
    match history.valid.last() {
        Some(metrics) => Ok(*metrics),
        None => Ok(training::evaluate(model, &CrossEntropyLoss::new(), test.unsharded().epoch(0)?)?),
    }
}

/// A fine-tuning run's outcome.
pub struct Outcome {
    pub model: FineTuned,
    pub test: EpochMetrics,
    /// What loading the pretrained state left out (`None` when the features were random).
    pub report: Option<LoadReport>,
    pub trainable: usize,
    pub total: usize,
}

/// A [`FineTuned`] model from `pretrained` features (or random ones, the baseline), its
/// features frozen, its head trained on `digits`.
pub fn fine_tune(
    pretrained: Option<&kiln::nn::StateDict>,
    digits: &(ImageDataset, ImageDataset),
    place: &Place,
    seed: u64,
    training: &Training,
    tensorboard: Option<&Path>,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let mut model = FineTuned::new(seed)?;
    let report = pretrained.map(|state| model.load_state_dict_non_strict(state)).transpose()?;
    model.features.freeze()?;
    model.to_device(place.device)?;
    let count = |only_trainable: bool| {
        let parameters = model.parameters().into_iter().filter(|(_, p)| !only_trainable || p.requires_grad());
        parameters.map(|(_, p)| p.value().len()).sum::<usize>()
    };
    let (trainable, total) = (count(true), count(false));
    let label = if pretrained.is_some() { "fine-tuning" } else { "random features" };
    if place.reports() {
        println!("{label}: training {trainable} of {total} parameters (the head)");
    }
    let test = train(&mut model, digits, place, seed, training, label, tensorboard)?;
    Ok(Outcome { model, test, report, trainable, total })
}
