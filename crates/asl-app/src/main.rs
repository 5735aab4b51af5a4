//! `cargo run --release -p asl-app`: trains the ASL alphabet CNN (or MLP) from NVIDIA DLI's
//! tutorial on the best device present, showing progress and per-epoch metrics;
//! `asl-app eval --checkpoint RUN` scores a saved model per letter, and
//! `asl-app predict --checkpoint RUN IMAGE...` reads letters from image files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use asl_app::{AppError, DeviceChoice, ModelKind, Observer, ScheduleKind, TrainConfig};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::training::{EpochMetrics, History};

/// A training step frees and reallocates the same large buffers every batch; glibc's
/// allocator hands big ones back to the OS and faults them in again, mimalloc keeps them.
/// On the CPU CNNs this is worth 5–15% (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, ValueEnum)]
enum Model {
    Cnn,
    Mlp,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

/// Train and use the American Sign Language alphabet classifier (24 letters, Sign
/// Language MNIST). Without a subcommand, trains.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (the default).
    Train(TrainArgs),
    /// Accuracy, per-letter precision/recall/F1 and the confusion matrix of a saved model
    /// on the validation set.
    Eval(EvalArgs),
    /// The letter shown in each image file (PNG or JPEG; greyscale 28×28, or converted).
    Predict(PredictArgs),
    /// Write a saved model as an ONNX file, for ONNX Runtime and other runtimes.
    Export(ExportArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The notebook's model to train.
    #[arg(long, value_enum, default_value_t = Model::Cnn)]
    model: Model,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam's learning rate (a schedule's starting or, for onecycle, peak rate).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Adam's weight decay (an L2 term, as PyTorch's `weight_decay`).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// The learning-rate schedule: step (× 0.1 after each third of the epochs), cosine (down
    /// to 0 over the run), onecycle (up over 30% of the batches, then down) or plateau
    /// (× 0.1 after 2 epochs without a lower validation loss).
    #[arg(long, value_parser = parse_schedule)]
    scheduler: Option<ScheduleKind>,
    /// Drives initialisation, shuffling, dropout and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Random rotations, zoom, shifts, brightness and contrast while training.
    #[arg(long)]
    augment: bool,
    /// Directory with the Sign Language MNIST CSVs (Kaggle's or DLI's); default: bundled.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where checkpoints, metrics and figures go; default: runs/asl-<model>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run whose checkpoint is in --out.
    #[arg(long)]
    resume: bool,
    /// Clear the files of another run in --out first (without it, such a directory is
    /// refused).
    #[arg(long)]
    overwrite: bool,
    /// Use only the first N training and validation samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Also log the run for TensorBoard here: the training loss every 20 batches, each
    /// epoch's losses, accuracies and learning rate, and the figures.
    #[arg(long)]
    tensorboard: Option<PathBuf>,
    /// Be one process of a data-parallel run started by mpirun (`mpirun -np 2 asl-app
    /// train --distributed`): --batch-size is the global batch, shared by the processes;
    /// each takes its own GPU, or its share of the CPU's cores. Needs a build with
    /// `--features distributed`.
    #[arg(long)]
    distributed: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A model file (model.safetensors), a resumable checkpoint, or a run's directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory with the Sign Language MNIST CSVs; default: bundled.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Also write the confusion matrix here as confusion.png and confusion.csv.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N validation samples.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(clap::Args)]
struct PredictArgs {
    /// A model file (model.safetensors), a resumable checkpoint, or a run's directory.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// The image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// A model file (model.safetensors, or a PyTorch state dict of the same model), a
    /// resumable checkpoint, or a run's directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The ONNX file to write.
    out: PathBuf,
}

struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl Observer for Progress {
    fn epoch_started(&mut self, epoch: usize, samples: usize) {
        let bar = ProgressBar::new(samples as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{}/{}", epoch + 1, self.epochs));
        self.bar = Some(bar);
    }

    fn progress(&mut self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    fn epoch_finished(&mut self, epoch: usize, train: &EpochMetrics, valid: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {:>2}/{}  train loss {:.4} accuracy {:.4}  valid loss {:.4} accuracy {:.4}  {:.0} samples/s  {:.1} s",
            epoch + 1,
            self.epochs,
            train.loss,
            train.accuracy,
            valid.loss,
            valid.accuracy,
            train.samples_per_second(),
            train.seconds
        );
    }
}

fn parse_schedule(name: &str) -> Result<ScheduleKind, String> {
    name.parse()
}

fn device_choice(arg: DeviceArg) -> DeviceChoice {
    match arg {
        DeviceArg::Auto => DeviceChoice::Auto,
        DeviceArg::Cpu => DeviceChoice::Cpu,
        DeviceArg::Gpu => DeviceChoice::Gpu,
    }
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { kiln::wgsl::quiet_headless_vulkan() };
    let cli = Cli::parse();
    let result = match cli.command {
        None => train(cli.train),
        Some(Command::Train(args)) => train(args),
        Some(Command::Eval(args)) => eval(args),
        Some(Command::Predict(args)) => predict(args),
        Some(Command::Export(args)) => export(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asl-app: {e}");
            // 130: a run stopped by Ctrl-C, as shells report one.
            if matches!(e, AppError::Interrupted { .. }) { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}

fn train(args: TrainArgs) -> Result<(), AppError> {
    if args.distributed {
        return train_distributed(args);
    }
    // This thread trains: it computes beside rayon's threads instead of handing work to them.
    kiln::threads::compute_on_this_thread(None);
    let config = train_config(args, Some(stop_on_ctrl_c()?));
    let device = asl_app::pick_device(config.device)?;
    println!("device: {device}");
    println!("data: {}   output: {}", config.data.display(), config.out.display());
    println!("{}", asl_app::build_model(config.model, config.seed)?);
    let mut progress = Progress { bar: None, epochs: config.epochs };
    let history = asl_app::train(&config, &device, &mut progress).inspect_err(|_| {
        eprintln!("the last completed epoch's checkpoint (if any) is in {}", config.out.display());
    })?;
    report(&config, &history);
    Ok(())
}

/// One process of `mpirun … asl-app train --distributed`: rank 0 reports and writes; an
/// error in any process ends them all (MPI_Abort) with it, rather than leaving the others
/// waiting for that process forever. A build without the `distributed` feature says how to
/// make one with it.
fn train_distributed(args: TrainArgs) -> Result<(), AppError> {
    let world = asl_app::World::init()?;
    let (rank, size) = (world.rank(), world.size());
    // mpirun ends every process on Ctrl-C; the last epoch's checkpoint stays.
    let config = train_config(args, None);
    let run = || -> Result<(), AppError> {
        let device = match config.device {
            DeviceChoice::Auto => world.best_device(),
            DeviceChoice::Cpu => world.cpu(),
            DeviceChoice::Gpu => world.gpu()?,
        };
        println!("rank {rank} of {size}: device {device}");
        if rank != 0 {
            asl_app::train_distributed(&world, &config, &device, &mut asl_app::Quiet)?;
            return Ok(());
        }
        println!("{size} processes, {} samples each per step ({} in all)", config.batch_size / size, config.batch_size);
        println!("data: {}   output: {}", config.data.display(), config.out.display());
        let mut progress = Progress { bar: None, epochs: config.epochs };
        let history = asl_app::train_distributed(&world, &config, &device, &mut progress)?;
        report(&config, &history);
        let (steps, spent) = world.averaging();
        println!(
            "gradients averaged over the {size} processes {steps} times: {:.2} ms a step on rank 0",
            1e3 * spent.as_secs_f64() / steps.max(1) as f64
        );
        Ok(())
    };
    match run() {
        Err(e) if size > 1 => world.abort(&e),
        result => result,
    }
}

fn train_config(args: TrainArgs, stop: Option<Arc<AtomicBool>>) -> TrainConfig {
    let model = match args.model {
        Model::Cnn => ModelKind::Cnn,
        Model::Mlp => ModelKind::Mlp,
    };
    TrainConfig {
        model,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        scheduler: args.scheduler,
        seed: args.seed,
        device: device_choice(args.device),
        augment: args.augment,
        data: args.data.unwrap_or_else(asl_app::bundled_data),
        out: args.out.unwrap_or_else(|| {
            PathBuf::from(format!("runs/asl-{}", if model == ModelKind::Cnn { "cnn" } else { "mlp" }))
        }),
        resume: args.resume,
        overwrite: args.overwrite,
        limit: args.limit,
        stop,
        tensorboard: args.tensorboard,
    }
}

/// The run's summary and where its files are.
fn report(config: &TrainConfig, history: &History) {
    if let Some((best, epoch)) =
        history.valid.iter().zip(1..).map(|(m, e)| (m.accuracy, e)).max_by(|a, b| a.0.total_cmp(&b.0))
    {
        let last = history.valid.last().expect("at least one epoch");
        let seconds: f64 = history.train.iter().map(|m| m.seconds).sum();
        let samples: usize = history.train.iter().map(|m| m.samples).sum();
        println!(
            "done: final valid accuracy {:.4}, best {best:.4} (epoch {epoch}); {:.0} samples/s over {} epochs",
            last.accuracy,
            samples as f64 / seconds.max(1e-9),
            history.epochs()
        );
    }
    println!(
        "checkpoint, model, best epoch's model ({}), metrics and figures ({}, {}, {}) in {}",
        asl_app::BEST_MODEL,
        asl_app::CURVES,
        asl_app::PREDICTIONS,
        asl_app::CONFUSION,
        config.out.display()
    );
    if let Some(dir) = &config.tensorboard {
        println!("TensorBoard log in {0}: tensorboard --logdir {0}", dir.display());
    }
}

/// A flag Ctrl-C sets: the run stops after the current batch with a checkpoint. A second
/// Ctrl-C stops at once (the last epoch's checkpoint stays).
fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>, AppError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after this batch with a checkpoint (Ctrl-C again to stop at once)");
    })
    .map_err(|e| AppError::Setup(format!("cannot catch Ctrl-C: {e}")))?;
    Ok(stop)
}

fn eval(args: EvalArgs) -> Result<(), AppError> {
    let device = asl_app::pick_device(device_choice(args.device))?;
    let data = args.data.unwrap_or_else(asl_app::bundled_data);
    let (matrix, valid) = asl_app::evaluate_checkpoint(&args.checkpoint, &data, &device, args.limit)?;
    let names = valid.class_names();
    println!(
        "{} on {} validation images of {} (device: {device})",
        args.checkpoint.display(),
        valid.len(),
        data.display()
    );
    println!("accuracy {:.4}\n", matrix.accuracy());
    println!("{}", matrix.report(names));
    println!("confusion matrix (rows: true letter, columns: predicted)");
    print!("   ");
    for name in names {
        print!("{name:>4}");
    }
    println!();
    for (t, name) in names.iter().enumerate() {
        print!("{name:>3}");
        for p in 0..matrix.classes() {
            print!("{:>4}", matrix.count(t, p));
        }
        println!();
    }
    if let Some(out) = args.out {
        std::fs::create_dir_all(&out).map_err(|e| AppError::Setup(format!("{}: {e}", out.display())))?;
        asl_app::save_figure(&kiln::figures::confusion(&matrix, names), &out.join(asl_app::CONFUSION))?;
        let csv = out.join("confusion.csv");
        std::fs::write(&csv, matrix.to_csv(names)).map_err(|e| AppError::Setup(format!("{}: {e}", csv.display())))?;
        println!("wrote {} and {}", out.join(asl_app::CONFUSION).display(), csv.display());
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<(), AppError> {
    let kind = asl_app::export_onnx(&args.checkpoint, &args.out)?;
    let model = if kind == ModelKind::Cnn { "CNN" } else { "MLP" };
    println!(
        "wrote {} (the ASL {model}; input \"input\" [batch, 1, 28, 28] in [0, 1], output \"output\": 24 logits)",
        args.out.display()
    );
    Ok(())
}

fn predict(args: PredictArgs) -> Result<(), AppError> {
    let device = asl_app::pick_device(device_choice(args.device))?;
    let (mut model, _) = asl_app::load_model(&args.checkpoint, &device)?;
    for (path, p) in args.images.iter().zip(asl_app::predict_images(&mut model, &args.images, &device)?) {
        println!(
            "{}: {} ({:.1}%; next {} {:.1}%)",
            path.display(),
            p.letter,
            100.0 * p.probability,
            p.runner_up.0,
            100.0 * p.runner_up.1
        );
    }
    Ok(())
}
