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
use kiln::distributed::World;
use kiln::nn::{Init, Module, Sequential};
use kiln::optim::Optimizer;
use kiln::schedules::{Schedule, ScheduleKind};
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

/// What an example's command line defaults to.
#[derive(Clone, Copy)]
pub struct Defaults {
    pub name: &'static str,
    /// The dataset's directory under `$KILN_DATA_DIR`; `None` for that root itself, for an
    /// example that reads several datasets.
    pub dataset_dir: Option<&'static str>,
    pub epochs: usize,
    /// The schedule without `--scheduler`.
    pub scheduler: Option<ScheduleKind>,
}

impl From<Tutorial> for Defaults {
    fn from(tutorial: Tutorial) -> Self {
        Self {
            name: tutorial.name(),
            dataset_dir: Some(tutorial.dataset_dir()),
            epochs: tutorial.epochs(),
            scheduler: None,
        }
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

/// The examples' command line (`--help` lists it).
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
    /// The learning rate (the tutorial's without `--lr`).
    pub lr: Option<f32>,
    pub weight_decay: f32,
    pub scheduler: Option<ScheduleKind>,
    /// How the model starts (the tutorial framework's way without `--init`).
    pub init: Option<Init>,
    /// Start from this saved model (a model file, a PyTorch state dict or a checkpoint).
    pub load: Option<PathBuf>,
    /// Where the model, its figures and its report go.
    pub out: PathBuf,
    /// `--distributed`: this process's place in a data-parallel run started by mpirun.
    pub world: Option<World>,
}

/// `--device`, resolved once a distributed run's process knows its place.
#[derive(Clone, Copy)]
enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
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
        let (mut options, device, distributed) = Self::parse_args(defaults, args.into_iter())?;
        // Joined once the command line is known to be good: a refusal after joining would
        // leave the other processes waiting.
        if distributed {
            options.world = Some(World::init()?);
        } else {
            // This thread trains: it computes beside rayon's threads (a distributed run's
            // World::cpu does the same with the process's share of the cores).
            kiln::threads::compute_on_this_thread(None);
        }
        options.device = match (&options.world, device) {
            (Some(world), DeviceArg::Auto) => world.best_device(),
            (Some(world), DeviceArg::Cpu) => world.cpu(),
            (Some(world), DeviceArg::Gpu) => world.gpu()?,
            (None, DeviceArg::Auto) => Device::best(),
            (None, DeviceArg::Cpu) => Device::Cpu,
            (None, DeviceArg::Gpu) => Device::gpu()?,
        };
        Ok(options)
    }

    /// The options `args` give, on the CPU whatever `--device` says (no GPU is opened), and
    /// without joining a distributed run.
    pub fn parse(defaults: Defaults, args: impl Iterator<Item = String>) -> Result<Options, Error> {
        Ok(Self::parse_args(defaults, args)?.0)
    }

    /// The options, `--device` and `--distributed`.
    fn parse_args(
        defaults: Defaults,
        mut args: impl Iterator<Item = String>,
    ) -> Result<(Options, DeviceArg, bool), Error> {
        let (mut data, mut epochs, mut device, mut seed, mut limit) = (None, defaults.epochs, DeviceArg::Auto, 0, None);
        let mut distributed = false;
        let (mut augment, mut tensorboard, mut lr, mut weight_decay) = (false, None, None, 0.0);
        let (mut scheduler, mut init, mut load, mut out) = (defaults.scheduler, None, None, None);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--data" => data = Some(PathBuf::from(value()?)),
                "--epochs" => epochs = number(&flag, &value()?)?,
                "--seed" => seed = number(&flag, &value()?)?,
                "--limit" => limit = Some(number(&flag, &value()?)?),
                "--augment" => augment = true,
                "--tensorboard" => tensorboard = Some(PathBuf::from(value()?)),
                "--lr" => lr = Some(positive(&flag, &value()?)?),
                "--weight-decay" => weight_decay = number(&flag, &value()?)?,
                "--scheduler" => {
                    scheduler = match value()?.as_str() {
                        "none" => None,
                        name => Some(name.parse().map_err(|e| format!("--scheduler: {e} or none"))?),
                    }
                }
                "--init" => init = Some(value()?.parse().map_err(|e| format!("--init: {e}"))?),
                "--load" => load = Some(PathBuf::from(value()?)),
                "--out" => out = Some(PathBuf::from(value()?)),
                "--distributed" => distributed = true,
                "--device" => {
                    device = match value()?.as_str() {
                        "auto" => DeviceArg::Auto,
                        "cpu" => DeviceArg::Cpu,
                        "gpu" => DeviceArg::Gpu,
                        other => return Err(format!("--device {other}: expected auto, cpu or gpu").into()),
                    }
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
        if !(weight_decay >= 0.0 && f32::is_finite(weight_decay)) {
            return Err(format!("--weight-decay {weight_decay}: expected a finite number ≥ 0").into());
        }
        let data = match data {
            Some(dir) => dir,
            None => match std::env::var_os("KILN_DATA_DIR") {
                Some(root) => PathBuf::from(root).join(defaults.dataset_dir.unwrap_or("")),
                None => return Err(format!("pass --data DIR: {}", defaults.data()).into()),
            },
        };
        let options = Options {
            data,
            epochs,
            device: Device::Cpu,
            seed,
            limit,
            augment,
            tensorboard,
            lr,
            weight_decay,
            scheduler,
            init,
            load,
            out: out.unwrap_or_else(|| PathBuf::from("runs").join(defaults.name)),
            world: None,
        };
        Ok((options, device, distributed))
    }

    /// Runs an example's `body` under these options. In a distributed run a process that
    /// fails ends every process with its error (MPI_Abort): the others would otherwise wait
    /// for it in their next collective step forever.
    pub fn run(self, body: impl FnOnce(&Options) -> Result<(), Error>) -> Result<(), Error> {
        match (body(&self), &self.world) {
            (Err(Error(error)), Some(world)) if world.size() > 1 => world.abort(&error),
            (result, _) => result,
        }
    }

    /// Whether this process reports: always, but for ranks other than 0 of a distributed run.
    pub fn reports(&self) -> bool {
        self.world.as_ref().is_none_or(|world| world.rank() == 0)
    }

    /// `model` as this process's replica in a distributed run (rank 0's weights; batch norm
    /// and dropout over the global batch); nothing otherwise.
    pub fn replicate(&self, model: &mut dyn Module) -> Result<(), Error> {
        if let Some(world) = &self.world {
            world.replicate(model)?;
        }
        Ok(())
    }

    /// The batch each process loads for a global batch of `batch`: all of it, or an equal
    /// share in a distributed run (refused when it does not divide).
    pub fn per_process(&self, batch: usize) -> Result<usize, Error> {
        let processes = self.world.as_ref().map_or(1, World::size);
        if !batch.is_multiple_of(processes) {
            return Err(format!("a batch of {batch} cannot be shared equally by {processes} processes").into());
        }
        Ok(batch / processes)
    }

    /// `train` and `test` loaders (made at [`Options::per_process`]'s batch) as this process
    /// loads them: whole, or its shares of every epoch in a distributed run (the test set's
    /// without padding, so no image counts twice).
    pub fn share_loaders(&self, (train, test): (DataLoader, DataLoader)) -> Result<(DataLoader, DataLoader), Error> {
        Ok(match &self.world {
            Some(world) => (train.shard(world.rank(), world.size())?, test.shard_unpadded(world.rank(), world.size())?),
            None => (train, test),
        })
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

    /// `--load`'s weights into `model`, when given (said so).
    pub fn load_into(&self, model: &mut dyn Module) -> Result<(), Error> {
        if let Some(path) = &self.load {
            training::load_weights(path, model)?;
            println!("started from {}", path.display());
        }
        Ok(())
    }

    /// `--scheduler`'s schedule for `optimizer` over `batches_per_epoch`, if any.
    pub fn schedule(&self, optimizer: &mut dyn Optimizer, batches_per_epoch: usize) -> Option<Schedule> {
        self.scheduler.map(|kind| Schedule::new(kind, optimizer, self.epochs, batches_per_epoch))
    }
}

fn usage(defaults: Defaults) -> String {
    let scheduler = defaults.scheduler.map_or("none".to_string(), |kind| format!("{kind:?}").to_lowercase());
    format!(
        "usage: {} [--data DIR] [--epochs N] [--device auto|cpu|gpu] [--seed S] [--limit N] [--augment] \
         [--tensorboard DIR] [--lr LR] [--weight-decay W] [--scheduler none|{}] [--init pytorch|keras] \
         [--load MODEL] [--out DIR] [--distributed]\n\
         DIR: {} (default: $KILN_DATA_DIR/{}), in any layout the tutorials' frameworks leave\n\
         --scheduler: default {scheduler}; --init: default the tutorial framework's;\n\
         --load: a saved model (model.safetensors, a PyTorch state dict in safetensors, a checkpoint)\n\
         --out: where the model, curves.png, predictions.png and confusion.png go (default runs/{})\n\
         --distributed: be one process of an mpirun run (a build with --features distributed): \
         each takes its share of every batch",
        defaults.name,
        ScheduleKind::NAMES.join("|"),
        defaults.data(),
        defaults.dataset_dir.unwrap_or(""),
        defaults.name
    )
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, Error> {
    text.parse().map_err(|_| format!("{flag} {text}: not a number").into())
}

fn positive(flag: &str, text: &str) -> Result<f32, Error> {
    let value: f32 = number(flag, text)?;
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{flag} {text}: expected a number > 0").into())
    }
}

/// An example's data: the two loaders and the test images (for the figures).
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
            out: Some(&options.out),
            world: options.world.as_ref(),
        }
    }
}

/// An example set up to train: the model on its device, its optimizer and schedule, the data.
pub struct Job {
    pub model: Sequential,
    pub optimizer: Box<dyn Optimizer>,
    pub schedule: Option<Schedule>,
    pub data: Data,
}

impl Job {
    /// Trains and tests as [`fit`] does, under `options`.
    pub fn fit(&mut self, options: &Options) -> Result<History, Error> {
        let run = self.data.run(options);
        Ok(fit(&mut self.model, self.optimizer.as_mut(), self.schedule.as_mut(), &run)?)
    }
}

/// The usual opening of every example: the datasets, the model (started as `--init` and
/// `--load` say) on the device, its optimizer and schedule, and the data.
pub fn setup(tutorial: Tutorial, options: &Options) -> Result<Job, Error> {
    let (train, test) = options.datasets(tutorial)?;
    let batch = options.per_process(tutorial.batch_size())?;
    if options.reports() {
        println!(
            "{tutorial}: {} training and {} test images of {:?} from {}, on {}{}",
            train.len(),
            test.len(),
            train.shape(),
            options.data.display(),
            options.device,
            if options.augment { ", augmented" } else { "" }
        );
    }
    let mut model = tutorial.model_with(options.seed, options.init.unwrap_or(tutorial.init()))?;
    if options.reports() {
        println!("{model}");
    }
    options.load_into(&mut model)?;
    model.to_device(&options.device)?;
    options.replicate(&mut model)?;
    let mut optimizer = tutorial.optimizer_with(&model, options.lr.unwrap_or(tutorial.lr()), options.weight_decay);
    let (train_loader, test_loader) = options.share_loaders(tutorial.loaders_of(
        &train,
        &test,
        &options.device,
        options.seed,
        options.augment,
        batch,
    )?)?;
    let schedule = options.schedule(optimizer.as_mut(), train_loader.len());
    Ok(Job { model, optimizer, schedule, data: Data { train: train_loader, test: test_loader, test_set: test } })
}
