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
//! `runs/fine_tune`); `--load` starts from a saved one instead of pretraining.

mod support;

use kiln::nn::Module;
use support::fine_tuning::{self, Pretrained, Training};
use support::{Defaults, Error, Options};

const DEFAULTS: Defaults = Defaults { name: "fine_tune", dataset_dir: None, epochs: 2, scheduler: None };

fn main() -> Result<(), Error> {
    let options = Options::from_args(DEFAULTS)?;
    options.single_process("fine_tune")?;
    let [fashion, digits] = fine_tuning::both_datasets(&options.data, options.limit)?;
    println!(
        "fine_tune: {} Fashion-MNIST and {} MNIST training images from {}, on {}",
        fashion.0.len(),
        digits.0.len(),
        options.data.display(),
        options.device
    );

    let mut pretrained = Pretrained::new(options.seed)?;
    options.init.unwrap_or_default().apply(&pretrained, &mut kiln::nn::Seeds::new(options.seed))?;
    println!("{}", pretrained.describe());
    // With --tensorboard DIR, each phase is its own run under DIR, side by side in TensorBoard.
    let log = |phase: &str| options.tensorboard.as_ref().map(|dir| dir.join(phase));
    let (device, seed) = (&options.device, options.seed);
    let training = Training {
        epochs: options.epochs,
        lr: options.lr.unwrap_or(1e-3),
        weight_decay: options.weight_decay,
        scheduler: options.scheduler,
    };
    let saved = match &options.load {
        Some(path) => path.clone(),
        None => {
            pretrained.to_device(device)?;
            let pretraining = log("pretraining");
            fine_tuning::train(
                &mut pretrained,
                &fashion,
                device,
                seed,
                &training,
                "pretraining",
                pretraining.as_deref(),
            )?;
            let saved = options.out.join("fashion_cnn.safetensors");
            std::fs::create_dir_all(&options.out)?;
            kiln::nn::save(&pretrained, &saved)?;
            println!("saved {}", saved.display());
            saved
        }
    };

    let state = kiln::training::read_weights(&saved)?;
    let tuning = log("fine-tuning");
    let tuned = fine_tuning::fine_tune(Some(&state), &digits, device, seed + 1, &training, tuning.as_deref())?;
    let report = tuned.report.as_ref().expect("loaded from the pretrained state");
    println!("loaded non-strictly: missing {:?}, unexpected {:?}", report.missing_keys, report.unexpected_keys);
    println!("{}", tuned.model.describe());
    let random = log("random-features");
    let baseline = fine_tuning::fine_tune(None, &digits, device, seed + 1, &training, random.as_deref())?;
    println!(
        "MNIST test accuracy: {:.4} from Fashion-MNIST features, {:.4} from random ones (heads alone trained)",
        tuned.test.accuracy, baseline.test.accuracy
    );
    Ok(())
}
