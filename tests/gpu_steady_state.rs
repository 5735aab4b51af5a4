//! What one training step costs the GPU runtime, for every tutorial's model: dispatches and
//! submits per step, and — once warm-up epochs have filled the pool and caches — no new
//! buffer, bind group or pipeline over three more epochs, and a peak of device memory that
//! stays where it was.
//!
//! Each model trains in its tutorial's loop (`train_epoch` over a GPU-resident loader, with
//! the tutorial's optimizer and transform) on a small synthetic dataset of its input shape,
//! on a GPU context of its own, so other tests' work never moves its counters: one of each
//! kernel class the adapter has (on lavapipe also the portable kernels hardware GPUs run). Batches are
//! the tutorial's size up to 32 (the ASL models' own): the Fashion-MNIST models' 256 and 64
//! would only make lavapipe slower at the same buffer bookkeeping.

use kiln::Device;
use kiln::data::{DataLoader, ImageDataset, numbered_classes};
use kiln::nn::{CrossEntropyLoss, Module};
use kiln::training;
use kiln::tutorials::Tutorial;
use kiln::wgsl::testing::{context_or_skip, contexts_of_each_class};
use kiln::wgsl::{AdapterPreference, GpuContext, KernelClass, RuntimeStats};

const MAX_BATCH: usize = 32;

/// Batches per epoch: enough that a step's buffers are reused from an earlier step's.
const STEPS: usize = 3;

/// Epochs before counting. The pool stops growing within the first; which pooled buffer
/// each tensor lands in settles over the next few steps (a step's first bind groups are
/// made when its buffers are new), measured at 7–9 steps for the ASL CNN.
const WARM_UP_EPOCHS: usize = 3;

/// Dispatches the ASL CNN's training step may take in the loop: the batch's gathering and
/// scaling on the device, forward, loss, backward, the Adam step and the running totals.
/// The software kernels update each of the 4 large parameters in a launch of its own
/// (kiln-wgsl's optimizer.rs says why) and the 12 small ones in two, the portable ones all
/// 16 in two.
fn asl_cnn_max_dispatches(class: KernelClass) -> u64 {
    match class {
        KernelClass::Software => 59,
        KernelClass::Hardware => 54,
    }
}

fn synthetic(tutorial: Tutorial, samples: usize) -> ImageDataset {
    let (shape, classes) = match tutorial {
        Tutorial::AslCnn | Tutorial::AslMlp => ([1, 28, 28], 24),
        Tutorial::FashionMnistCnn | Tutorial::FashionMnistMlp | Tutorial::MnistMlp => ([1, 28, 28], 10),
        Tutorial::Cifar10Lenet => ([3, 32, 32], 10),
    };
    let len: usize = shape.iter().product();
    let images = (0..samples * len).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let labels = (0..samples).map(|i| (i * 7 % classes) as i32).collect();
    ImageDataset::new(images, labels, shape, numbered_classes(classes)).unwrap()
}

/// Counters after the warm-up and after each of three more epochs of `STEPS` batches.
fn epochs(tutorial: Tutorial, ctx: &GpuContext) -> [RuntimeStats; 4] {
    let device = Device::Gpu(ctx.clone());
    let batch = tutorial.batch_size().min(MAX_BATCH);
    let data = synthetic(tutorial, STEPS * batch);
    let mut model = tutorial.model(3).unwrap();
    model.to_device(&device).unwrap();
    let mut optimizer = tutorial.optimizer(&model, tutorial.lr());
    let train = DataLoader::on_device(&data, batch, &device, tutorial.transform()).unwrap().shuffle(true).seed(3);
    let loss_fn = CrossEntropyLoss::new();
    let mut epoch = |epoch: usize| {
        let batches = train.epoch(epoch as u64).unwrap();
        training::train_epoch(&mut model, optimizer.as_mut(), &loss_fn, batches, |_| {}).unwrap();
        ctx.stats()
    };
    for e in 0..WARM_UP_EPOCHS {
        epoch(e);
    }
    std::array::from_fn(|i| if i == 0 { ctx.stats() } else { epoch(WARM_UP_EPOCHS + i) })
}

#[test]
fn a_training_step_creates_nothing_once_warm() {
    let classes: Vec<_> =
        contexts_of_each_class("a_training_step_creates_nothing_once_warm").iter().map(|c| c.kernel_class()).collect();
    for class in classes {
        a_training_step_creates_nothing_once_warm_with(class);
    }
}

fn a_training_step_creates_nothing_once_warm_with(class: KernelClass) {
    let mut asl_cnn_dispatches = 0;
    for tutorial in Tutorial::ALL {
        let ctx = GpuContext::with_kernel_class(&AdapterPreference::from_env(), class).unwrap();
        let [warm, first, _, third] = epochs(tutorial, &ctx);
        // The three epochs after warm-up, and the last two (whole steps, no epoch's first).
        let (settled, measured) = (third.since(&warm), third.since(&first));
        let per_step = |count: u64| count as f64 / (2 * STEPS) as f64;
        println!(
            "{tutorial} ({class:?} kernels): per step {:.0} dispatches, {:.1} submits; after warm-up {} buffers, \
             {} bind groups and {} pipelines created; peak {} KiB",
            per_step(measured.dispatches),
            per_step(measured.submits),
            settled.buffers_created,
            settled.bind_groups_created,
            settled.pipelines_created,
            third.peak_buffer_bytes >> 10,
        );
        for (name, created) in [
            ("buffers", settled.buffers_created),
            ("bind groups", settled.bind_groups_created),
            ("pipelines", settled.pipelines_created),
        ] {
            assert_eq!(created, 0, "{tutorial} ({class:?}): {name} created after the warm-up");
        }
        assert_eq!(third.peak_buffer_bytes, first.peak_buffer_bytes, "{tutorial} ({class:?}): peak device memory grew");
        if tutorial == Tutorial::AslCnn {
            asl_cnn_dispatches = measured.dispatches;
        }
    }
    let (steps, most) = ((2 * STEPS) as u64, asl_cnn_max_dispatches(class));
    assert!(
        asl_cnn_dispatches <= most * steps,
        "ASL CNN ({class:?}): {asl_cnn_dispatches} dispatches in {steps} steps, more than {most} a step"
    );
}

#[test]
fn trimming_returns_idle_memory_to_the_driver() {
    let Some(_) = context_or_skip("trimming_returns_idle_memory_to_the_driver") else { return };
    let ctx = GpuContext::new(&AdapterPreference::from_env()).unwrap();
    epochs(Tutorial::AslMlp, &ctx);
    let before = ctx.stats().buffer_bytes;
    assert!(ctx.pooled_bytes() > 0, "the finished run left idle buffers in the pool");
    Device::Gpu(ctx.clone()).release_idle_memory();
    assert_eq!(ctx.pooled_bytes(), 0);
    assert!(ctx.stats().buffer_bytes < before);
}
