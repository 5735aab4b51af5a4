//! What the tutorial examples share: their command line and the epoch loop, which prints
//! loss and accuracy per epoch as the tutorials do.

use std::path::PathBuf;

use kiln::Device;
use kiln::data::{DataLoader, ImageDataset};
use kiln::nn::{CrossEntropyLoss, Module, Sequential};
use kiln::optim::Optimizer;
use kiln::training::{self, History};
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

/// `--data DIR --epochs N --device auto|cpu|gpu --seed S --limit N --augment`.
pub struct Options {
    pub data: PathBuf,
    pub epochs: usize,
    pub device: Device,
    pub seed: u64,
    /// Train and test on the first this many samples only (quick runs).
    pub limit: Option<usize>,
    /// Train on randomly augmented images ([`Tutorial::augmented_transform`]).
    pub augment: bool,
}

impl Options {
    /// Reads the command line. Without `--data`, the dataset's usual directory under
    /// `$KILN_DATA_DIR`.
    /// `--help` prints the usage and exits.
    /// Call it first thing in `main`: it also quiets a headless machine's Vulkan start
    /// ([`kiln::wgsl::quiet_headless_vulkan`]), before any other thread runs.
    pub fn from_args(tutorial: Tutorial) -> Result<Options, Error> {
        // SAFETY: the examples call this first in main, before any other thread exists.
        unsafe { kiln::wgsl::quiet_headless_vulkan() };
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            println!("{}", usage(tutorial));
            std::process::exit(0);
        }
        Self::parse(tutorial, args.into_iter())
    }

    pub fn parse(tutorial: Tutorial, mut args: impl Iterator<Item = String>) -> Result<Options, Error> {
        let (mut data, mut epochs, mut device, mut seed, mut limit) = (None, tutorial.epochs(), None, 0, None);
        let mut augment = false;
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--data" => data = Some(PathBuf::from(value()?)),
                "--epochs" => epochs = number(&flag, &value()?)?,
                "--seed" => seed = number(&flag, &value()?)?,
                "--limit" => limit = Some(number(&flag, &value()?)?),
                "--augment" => augment = true,
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
        let data = match data {
            Some(dir) => dir,
            None => match std::env::var_os("KILN_DATA_DIR") {
                Some(root) => PathBuf::from(root).join(tutorial.dataset_dir()),
                None => {
                    return Err(
                        format!("pass --data DIR: the directory of the {} dataset", tutorial.dataset_dir()).into()
                    );
                }
            },
        };
        Ok(Options { data, epochs, device: device.unwrap_or_else(Device::best), seed, limit, augment })
    }

    /// The tutorial's training and test sets, cut to `--limit`.
    pub fn datasets(&self, tutorial: Tutorial) -> Result<(ImageDataset, ImageDataset), Error> {
        let (train, test) = tutorial.datasets(&self.data)?;
        Ok(match self.limit {
            Some(n) => (train.take(n), test.take(n)),
            None => (train, test),
        })
    }
}

fn usage(tutorial: Tutorial) -> String {
    format!(
        "usage: {tutorial} [--data DIR] [--epochs N] [--device auto|cpu|gpu] [--seed S] [--limit N] [--augment]\n\
         DIR holds the {} dataset (default: $KILN_DATA_DIR/{})",
        tutorial.dataset_dir(),
        tutorial.dataset_dir()
    )
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, Error> {
    text.parse().map_err(|_| format!("{flag} {text}: not a number").into())
}

/// Trains for `epochs`, evaluating on `test` after each, and prints a line per epoch.
pub fn fit(
    model: &mut Sequential,
    optimizer: &mut dyn Optimizer,
    train: &DataLoader,
    test: &DataLoader,
    epochs: usize,
) -> Result<History, Error> {
    let loss_fn = CrossEntropyLoss::new();
    let mut history = History::default();
    for epoch in 0..epochs {
        let t = training::train_epoch(model, optimizer, &loss_fn, train.epoch(epoch as u64)?, |_| {})?;
        let v = training::evaluate(model, &loss_fn, test.epoch(0)?)?;
        println!(
            "epoch {:>2}/{epochs}  loss {:.4}  accuracy {:.4}  test loss {:.4}  test accuracy {:.4}  {:.1} s ({:.0} samples/s)",
            epoch + 1,
            t.loss,
            t.accuracy,
            v.loss,
            v.accuracy,
            t.seconds,
            t.samples_per_second()
        );
        history.train.push(t);
        history.valid.push(v);
    }
    Ok(history)
}

/// The usual opening of every example: the datasets, the model on the device, its
/// optimizer and the two loaders.
pub fn setup(
    tutorial: Tutorial,
    options: &Options,
) -> Result<(Sequential, Box<dyn Optimizer>, DataLoader, DataLoader), Error> {
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
    Ok((model, optimizer, train_loader, test_loader))
}
