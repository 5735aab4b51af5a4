//! What the examples share: their command line and the epoch loop, which prints loss and
//! accuracy per epoch as the tutorials do.
// Each example includes this module and uses only part of it.
#![allow(dead_code)]

pub mod fine_tuning;
pub mod fitting;

#[allow(unused_imports)] // fine_tune uses neither.
pub use fitting::{Run, fit};

use std::path::PathBuf;

use kiln::Device;
use kiln::data::{DataLoader, ImageDataset};
use kiln::nn::{Module, Sequential};
use kiln::optim::Optimizer;
use kiln::tutorials::Tutorial;

/// Any error, shown by its message when `main` returns it (rather than `Debug`'s quoted form).
pub struct Error(Box<dyn std::error::Error>);

impl<E: Into<Box<dyn std::error::Error>>> From<E> for Error {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// mimalloc rather than the system allocator: a training step frees and reallocates the
/// same large buffers every batch, which glibc returns to the OS and faults back in. On the
/// CPU CNNs mimalloc is worth 5–15% (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What an example's command line defaults to.
#[derive(Clone, Copy)]
pub struct Defaults {
    pub name: &'static str,
    /// The dataset's directory under `$KILN_DATA_DIR`; `None` for that root itself, for an
    /// example that reads several datasets.
    pub dataset_dir: Option<&'static str>,
    pub epochs: usize,
}

impl From<Tutorial> for Defaults {
    fn from(tutorial: Tutorial) -> Self {
        Self { name: tutorial.name(), dataset_dir: Some(tutorial.dataset_dir()), epochs: tutorial.epochs() }
    }
}

impl Defaults {
    /// What `--data` names, for messages.
    fn data(&self) -> String {
        match self.dataset_dir {
            Some(dir) => format!("the directory of the {dir} dataset"),
            None => "the directory of the datasets' directories".into(),
        }
    }
}

/// `--data DIR --epochs N --device auto|cpu|gpu --seed S --limit N --augment --tensorboard DIR`.
pub struct Options {
    pub data: PathBuf,
    pub epochs: usize,
    pub device: Device,
    pub seed: u64,
    /// Train and test on the first this many samples only (quick runs).
    pub limit: Option<usize>,
    /// Train on randomly augmented images ([`Tutorial::augmented_transform`]).
    pub augment: bool,
    /// Also log the run for TensorBoard here.
    pub tensorboard: Option<PathBuf>,
}

impl Options {
    /// Reads the command line. Without `--data`, the dataset's usual directory under
    /// `$KILN_DATA_DIR`.
    /// `--help` prints the usage and exits.
    /// Call it first thing in `main`: it also quiets a headless machine's Vulkan start
    /// ([`kiln::wgsl::quiet_headless_vulkan`]), before any other thread runs.
    pub fn from_args(defaults: impl Into<Defaults>) -> Result<Options, Error> {
        // SAFETY: the examples call this first in main, before any other thread exists.
        unsafe { kiln::wgsl::quiet_headless_vulkan() };
        let defaults = defaults.into();
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            println!("{}", usage(defaults));
            std::process::exit(0);
        }
        Self::parse(defaults, args.into_iter())
    }

    pub fn parse(defaults: Defaults, mut args: impl Iterator<Item = String>) -> Result<Options, Error> {
        let (mut data, mut epochs, mut device, mut seed, mut limit) = (None, defaults.epochs, None, 0, None);
        let (mut augment, mut tensorboard) = (false, None);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--data" => data = Some(PathBuf::from(value()?)),
                "--epochs" => epochs = number(&flag, &value()?)?,
                "--seed" => seed = number(&flag, &value()?)?,
                "--limit" => limit = Some(number(&flag, &value()?)?),
                "--augment" => augment = true,
                "--tensorboard" => tensorboard = Some(PathBuf::from(value()?)),
                "--device" => {
                    device = Some(match value()?.as_str() {
                        "auto" => Device::best(),
                        "cpu" => Device::Cpu,
                        "gpu" => Device::gpu()?,
                        other => return Err(format!("--device {other}: expected auto, cpu or gpu").into()),
                    })
                }
                other => return Err(format!("unknown option {other} (try --help)").into()),
            }
        }
        // A run of nothing would report figures of nothing.
        if epochs == 0 {
            return Err("--epochs 0: a run needs at least one epoch".into());
        }
        if limit == Some(0) {
            return Err("--limit 0: no samples to train on".into());
        }
        let data = match data {
            Some(dir) => dir,
            None => match std::env::var_os("KILN_DATA_DIR") {
                Some(root) => PathBuf::from(root).join(defaults.dataset_dir.unwrap_or("")),
                None => return Err(format!("pass --data DIR: {}", defaults.data()).into()),
            },
        };
        Ok(Options { data, epochs, device: device.unwrap_or_else(Device::best), seed, limit, augment, tensorboard })
    }

    /// The tutorial's training and test sets, cut to `--limit`.
    pub fn datasets(&self, tutorial: Tutorial) -> Result<(ImageDataset, ImageDataset), Error> {
        Ok(self.limited(tutorial.datasets(&self.data)?))
    }

    /// A training and a test set cut to `--limit`.
    pub fn limited(&self, (train, test): (ImageDataset, ImageDataset)) -> (ImageDataset, ImageDataset) {
        match self.limit {
            Some(n) => (train.take(n), test.take(n)),
            None => (train, test),
        }
    }
}

fn usage(defaults: Defaults) -> String {
    format!(
        "usage: {} [--data DIR] [--epochs N] [--device auto|cpu|gpu] [--seed S] [--limit N] [--augment] \
         [--tensorboard DIR]\n\
         DIR: {} (default: $KILN_DATA_DIR/{})",
        defaults.name,
        defaults.data(),
        defaults.dataset_dir.unwrap_or("")
    )
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, Error> {
    text.parse().map_err(|_| format!("{flag} {text}: not a number").into())
}

/// An example's data: the two loaders and the test images (for the logged figures).
pub struct Data {
    pub train: DataLoader,
    pub test: DataLoader,
    pub test_set: ImageDataset,
}

impl Data {
    /// The run [`fit`] makes of this data under `options`.
    pub fn run<'a>(&'a self, options: &'a Options) -> Run<'a> {
        Run {
            train: &self.train,
            test: &self.test,
            test_set: &self.test_set,
            epochs: options.epochs,
            label: "",
            tensorboard: options.tensorboard.as_deref(),
        }
    }
}

/// The usual opening of every example: the datasets, the model on the device, its
/// optimizer and the data.
pub fn setup(tutorial: Tutorial, options: &Options) -> Result<(Sequential, Box<dyn Optimizer>, Data), Error> {
    let (train, test) = options.datasets(tutorial)?;
    println!(
        "{tutorial}: {} training and {} test images of {:?} from {}, on {}{}",
        train.len(),
        test.len(),
        train.shape(),
        options.data.display(),
        options.device,
        if options.augment { ", augmented" } else { "" }
    );
    let mut model = tutorial.model(options.seed)?;
    println!("{model}");
    model.to_device(&options.device)?;
    let optimizer = tutorial.optimizer(&model, tutorial.lr());
    let (train_loader, test_loader) =
        tutorial.loaders(&train, &test, &options.device, options.seed, options.augment)?;
    Ok((model, optimizer, Data { train: train_loader, test: test_loader, test_set: test }))
}
