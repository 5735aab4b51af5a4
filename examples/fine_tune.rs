//! Fine-tuning, beyond the tutorials (the Fashion-MNIST tutorial's homework): a CNN trained
//! on Fashion-MNIST and saved; reloaded non-strictly into a model with a new 10-class head
//! (the report names the old head's keys as unexpected and the new head's as missing); its
//! convolutions frozen; the head trained on MNIST. The same head trained on random frozen
//! convolutions runs after it, as the baseline the pretrained features should beat.
//!
//! `cargo run --release --example fine_tune -- --data DIR` (see `--help`): DIR holds the
//! `fashion-mnist` and `mnist` directories (as `../shared/data` does); `--epochs` is each
//! phase's; with `--tensorboard DIR` each phase is logged in its own directory under DIR;
//! `--lr`, `--weight-decay` and `--scheduler` set each phase's Adam and schedule. The
//! pretrained model is saved as `fashion_cnn.safetensors` in `--out` (default
//! `runs/fine_tune`); `--load` starts from a saved one instead of pretraining. With
//! `--distributed` under mpirun, each phase is data-parallel and rank 0 alone prints and
//! writes.

mod support;

use kiln::nn::Module;
use support::fine_tuning::{self, Place, Pretrained, Training};
use support::{Defaults, Error, Options};

const DEFAULTS: Defaults = Defaults { name: "fine_tune", dataset_dir: None, epochs: 2, scheduler: None };

fn main() -> Result<(), Error> {
    Options::from_args(DEFAULTS)?.run(fine_tune)
}

fn fine_tune(options: &Options) -> Result<(), Error> {
    let [fashion, digits] = fine_tuning::both_datasets(&options.data, options.limit)?;
    let place = Place { device: &options.device, world: options.world.as_ref() };
    let reports = place.reports();
    if reports {
        println!(
            "fine_tune: {} Fashion-MNIST and {} MNIST training images from {}, on {}",
            fashion.0.len(),
            digits.0.len(),
            options.data.display(),
            options.device
        );
    }

    let mut pretrained = Pretrained::new(options.seed)?;
    options.init.unwrap_or_default().apply(&pretrained, &mut kiln::nn::Seeds::new(options.seed))?;
    if reports {
        println!("{}", pretrained.describe());
    }
    // With --tensorboard DIR, each phase is its own run under DIR, side by side in TensorBoard
    // (rank 0's alone in a distributed run).
    let log = |phase: &str| options.tensorboard.as_ref().filter(|_| reports).map(|dir| dir.join(phase));
    let seed = options.seed;
    let training = Training {
        epochs: options.epochs,
        lr: options.lr.unwrap_or(1e-3),
        weight_decay: options.weight_decay,
        scheduler: options.scheduler,
    };
    let saved = match &options.load {
        Some(path) => path.clone(),
        None => {
            pretrained.to_device(&options.device)?;
            let pretraining = log("pretraining");
            fine_tuning::train(
                &mut pretrained,
                &fashion,
                &place,
                seed,
                &training,
                "pretraining",
                pretraining.as_deref(),
            )?;
            let saved = options.out.join("fashion_cnn.safetensors");
            if reports {
                std::fs::create_dir_all(&options.out)?;
                kiln::nn::save(&pretrained, &saved)?;
                println!("saved {}", saved.display());
            }
            saved
        }
    };

    // Rank 0 reads the pretrained model and sends it to every process of a distributed run.
    let state = match place.world {
        Some(world) => {
            let bytes = world.broadcast_bytes(if reports { Some(std::fs::read(&saved)?) } else { None });
            kiln::training::weights_from_bytes(&bytes, &saved)?
        }
        None => kiln::training::read_weights(&saved)?,
    };
    let tuning = log("fine-tuning");
    let tuned = fine_tuning::fine_tune(Some(&state), &digits, &place, seed + 1, &training, tuning.as_deref())?;
    let random = log("random-features");
    let baseline = fine_tuning::fine_tune(None, &digits, &place, seed + 1, &training, random.as_deref())?;
    if reports {
        let report = tuned.report.as_ref().expect("loaded from the pretrained state");
        println!("loaded non-strictly: missing {:?}, unexpected {:?}", report.missing_keys, report.unexpected_keys);
        println!("{}", tuned.model.describe());
        println!(
            "MNIST test accuracy: {:.4} from Fashion-MNIST features, {:.4} from random ones (heads alone trained)",
            tuned.test.accuracy, baseline.test.accuracy
        );
    }
    Ok(())
}
