//! `cargo run --release -p asl-app`: trains the ASL alphabet CNN (or MLP) from NVIDIA DLI's
//! tutorial on the best device present, showing progress and per-epoch metrics.

use std::path::PathBuf;
use std::process::ExitCode;

use asl_app::{DeviceChoice, ModelKind, Observer, TrainConfig};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::training::EpochMetrics;

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

/// Train the American Sign Language alphabet classifier (24 letters, Sign Language MNIST).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The notebook's model to train.
    #[arg(long, value_enum, default_value_t = Model::Cnn)]
    model: Model,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
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
    /// Where checkpoints and metrics go; default: runs/asl-<model>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run whose checkpoint is in --out.
    #[arg(long)]
    resume: bool,
    /// Use only the first N training and validation samples.
    #[arg(long)]
    limit: Option<usize>,
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

fn main() -> ExitCode {
    let args = Args::parse();
    let model = match args.model {
        Model::Cnn => ModelKind::Cnn,
        Model::Mlp => ModelKind::Mlp,
    };
    let config = TrainConfig {
        model,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        device: match args.device {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Gpu => DeviceChoice::Gpu,
        },
        augment: args.augment,
        data: args.data.unwrap_or_else(asl_app::bundled_data),
        out: args.out.unwrap_or_else(|| {
            PathBuf::from(format!("runs/asl-{}", if model == ModelKind::Cnn { "cnn" } else { "mlp" }))
        }),
        resume: args.resume,
        limit: args.limit,
    };
    let device = match asl_app::pick_device(config.device) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("asl-app: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("device: {device}");
    println!("data: {}   output: {}", config.data.display(), config.out.display());
    let mut progress = Progress { bar: None, epochs: config.epochs };
    match asl_app::train(&config, &device, &mut progress) {
        Ok(history) => {
            if let Some((best, epoch)) =
                history.valid.iter().zip(1..).map(|(m, e)| (m.accuracy, e)).max_by(|a, b| a.0.total_cmp(&b.0))
            {
                let last = history.valid.last().expect("at least one epoch");
                println!("done: final valid accuracy {:.4}, best {best:.4} (epoch {epoch})", last.accuracy);
            }
            println!("checkpoint, model and metrics in {}", config.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("asl-app: {e}");
            eprintln!("the last completed epoch's checkpoint (if any) is in {}", config.out.display());
            ExitCode::FAILURE
        }
    }
}
