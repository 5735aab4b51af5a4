//! Data-parallel training over MPI, the first step of the Fashion-MNIST tutorial's multi-GPU
//! homework: the quickstart's MLP (784 → 512 → 512 → 10, no dropout) on MNIST, or the ASL
//! CNN (batch norm and dropout) on Sign Language MNIST, every process on its share of each
//! epoch, the gradients averaged after every backward pass, so that N processes at a global
//! batch of B take the steps one process takes at B.
//!
//! ```sh
//! cargo build --release --features distributed --example data_parallel
//! mpirun -np 2 target/release/examples/data_parallel --data ../shared/data/mnist
//! ```
//!
//! Options: `--model mnist-mlp|asl-cnn`, `--data DIR` (MNIST's, or Sign Language MNIST's
//! CSVs), `--epochs N`, `--batch-size B` (global, a multiple of the process count),
//! `--limit N`, `--seed S`, `--sgd LR` (SGD with momentum 0.9 instead of Adam 1e-3),
//! `--device cpu|gpu` (each process's share of the cores, or its own GPU; default cpu),
//! `--out DIR` (rank 0 writes `model.safetensors` there). Every process prints a hash of its
//! weights at the end: they are the same bits everywhere. A process that fails (a missing
//! file, say) ends the whole run with its error.

use std::path::PathBuf;

use kiln::autograd::Var;
use kiln::data::presets;
use kiln::distributed::World;
use kiln::nn::{CrossEntropyLoss, Module, Seeds, models};
use kiln::optim::{Adam, Optimizer, Sgd};
use kiln::training;
use kiln::tutorials::Tutorial;

type Error = Box<dyn std::error::Error>;

struct Options {
    tutorial: Tutorial,
    data: PathBuf,
    epochs: usize,
    batch_size: usize,
    limit: Option<usize>,
    seed: u64,
    sgd: Option<f32>,
    gpu: bool,
    out: PathBuf,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        tutorial: Tutorial::MnistMlp,
        data: PathBuf::from("../shared/data/mnist"),
        epochs: 1,
        batch_size: 96,
        limit: None,
        seed: 0,
        sgd: None,
        gpu: false,
        out: PathBuf::from("runs/data_parallel"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| format!("{flag} {value}: not {what}");
        match flag.as_str() {
            "--model" => {
                options.tutorial = match value.as_str() {
                    "mnist-mlp" => Tutorial::MnistMlp,
                    "asl-cnn" => Tutorial::AslCnn,
                    _ => return Err(format!("--model {value}: expected mnist-mlp or asl-cnn").into()),
                }
            }
            "--data" => options.data = PathBuf::from(value),
            "--out" => options.out = PathBuf::from(value),
            "--epochs" => options.epochs = value.parse().map_err(|_| number("a count"))?,
            "--batch-size" => options.batch_size = value.parse().map_err(|_| number("a count"))?,
            "--limit" => options.limit = Some(value.parse().map_err(|_| number("a count"))?),
            "--seed" => options.seed = value.parse().map_err(|_| number("a number"))?,
            "--device" => {
                options.gpu = match value.as_str() {
                    "cpu" => false,
                    "gpu" => true,
                    _ => return Err(format!("--device {value}: expected cpu or gpu").into()),
                }
            }
            "--sgd" => options.sgd = Some(value.parse().map_err(|_| number("a learning rate"))?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(options)
}

/// FNV-1a over the weights' bits: equal on every process, or the run has diverged.
fn weights_hash(model: &dyn Module) -> Result<u64, Error> {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (_, parameter) in model.parameters() {
        for value in parameter.value().to_vec()? {
            for byte in value.to_bits().to_le_bytes() {
                hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    Ok(hash)
}

fn main() -> Result<(), Error> {
    let world = World::init()?;
    // A process that fails stops them all, rather than leaving them waiting for it.
    train(&world).unwrap_or_else(|error| world.abort(&error));
    Ok(())
}

fn train(world: &World) -> Result<(), Error> {
    let (rank, size) = (world.rank(), world.size());
    let options = options()?;
    if options.batch_size == 0 || !options.batch_size.is_multiple_of(size) {
        return Err(format!("--batch-size {}: not a multiple of the {size} processes", options.batch_size).into());
    }
    let (mut train, mut test) = match options.tutorial {
        Tutorial::AslCnn => presets::sign_language_mnist_dir(&options.data)?,
        _ => presets::mnist_from(&options.data)?,
    };
    if let Some(n) = options.limit {
        (train, test) = (train.take(n), test.take(n));
    }
    let mut model = match options.tutorial {
        Tutorial::AslCnn => options.tutorial.model(options.seed)?,
        _ => models::fashion_mnist_mlp(&mut Seeds::new(options.seed))?,
    };
    // Rank 0's weights everywhere; batch norm and dropout over the whole global batch.
    world.replicate(&mut model)?;
    let parameters: Vec<Var> = model.parameters().into_iter().map(|(_, p)| p).collect();
    let mut optimizer: Box<dyn Optimizer> = match options.sgd {
        Some(lr) => Box::new(Sgd::new(parameters, lr).momentum(0.9)),
        None => Box::new(Adam::new(parameters, 1e-3)),
    };
    let device = if options.gpu { world.gpu()? } else { world.cpu() };
    println!("rank {rank} of {size}: device {device}");
    model.to_device(&device)?;
    let transform = options.tutorial.transform();
    let per_process = options.batch_size / size;
    let train_loader = kiln::data::DataLoader::on_device(&train, per_process, &device, transform.clone())?
        .shuffle(true)
        .seed(options.seed)
        .shard(rank, size)?;
    let test_loader =
        kiln::data::DataLoader::on_device(&test, per_process, &device, transform)?.shard_unpadded(rank, size)?;
    if rank == 0 {
        println!(
            "{size} processes, {per_process} images each per step ({} in all), {} steps per epoch",
            options.batch_size,
            train_loader.len()
        );
    }
    let loss_fn = CrossEntropyLoss::new();
    for epoch in 0..options.epochs {
        let mut stepped = world.data_parallel(optimizer.as_mut());
        let local =
            training::train_epoch(&mut model, &mut stepped, &loss_fn, train_loader.epoch(epoch as u64)?, |_| {})?;
        let (train_metrics, test_metrics) =
            (world.global(&local), world.global(&training::evaluate(&mut model, &loss_fn, test_loader.epoch(0)?)?));
        if rank == 0 {
            println!(
                "epoch {}/{}  loss {:.4}  accuracy {:.4}  test loss {:.4}  test accuracy {:.4}  {:.1} s",
                epoch + 1,
                options.epochs,
                train_metrics.loss,
                train_metrics.accuracy,
                test_metrics.loss,
                test_metrics.accuracy,
                train_metrics.seconds
            );
        }
    }
    let (steps, spent) = world.averaging();
    println!(
        "rank {rank} of {size}: weights {:016x}; gradients averaged {steps} times, {:.2} ms each",
        weights_hash(&model)?,
        1e3 * spent.as_secs_f64() / steps.max(1) as f64
    );
    if rank == 0 {
        std::fs::create_dir_all(&options.out)?;
        kiln::nn::save(&model, &options.out.join("model.safetensors"))?;
    }
    Ok(())
}
