//! Batch norm and dropout over a batch shared among processes ([`Replicas`]): threads stand
//! in for the processes of a data-parallel run, each holding the rows `DataLoader::shard`
//! would give it. Their outputs are the single process's rows, their running statistics
//! its bits, and their gradients, averaged as a data-parallel run averages them, its
//! gradients.

use std::sync::{Arc, Barrier, Mutex};

use kiln_autograd::Var;
use kiln_nn::{
    BatchNorm1d, BatchNorm2d, Conv2d, CrossEntropyLoss, Dropout, Flatten, Linear, Module, ReLU, Replicas, Seeds,
    Sequential,
};
use kiln_tensor::{Device, Tensor};

/// The processes' shared mailbox: every thread puts its values in its slot, waits for the
/// others, reads them all, and waits again before a slot may be reused.
struct Threads {
    rank: usize,
    size: usize,
    slots: Arc<Mutex<Vec<Vec<f32>>>>,
    barrier: Arc<Barrier>,
}

impl Replicas for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather(&self, values: &[f32]) -> Vec<f32> {
        self.slots.lock().unwrap()[self.rank] = values.to_vec();
        self.barrier.wait();
        let all = self.slots.lock().unwrap().concat();
        self.barrier.wait();
        all
    }
}

fn model() -> Sequential {
    let seeds = &mut Seeds::new(7);
    Sequential::new()
        .add(Conv2d::new(2, 4, 3, seeds).unwrap().padding(1))
        .add(BatchNorm2d::new(4).unwrap())
        .add(ReLU)
        .add(Dropout::new(0.4, seeds))
        .add(Flatten::new())
        .add(Linear::new(4 * 5 * 5, 6, seeds).unwrap())
        .add(BatchNorm1d::new(6).unwrap())
        .add(Linear::new(6, 3, seeds).unwrap())
}

/// Two steps' outputs of the last step, gradients, and buffers of one process holding `rows`
/// of the batch (the whole batch when `replicas` is `None`).
struct Seen {
    output: Vec<f32>,
    grads: Vec<Vec<f32>>,
    buffers: Vec<Vec<f32>>,
}

fn train(images: &[f32], labels: &[i32], rows: &[usize], replicas: Option<Arc<dyn Replicas>>) -> Seen {
    let cpu = Device::Cpu;
    let row = images.len() / labels.len();
    let mut model = model();
    model.set_replicas(replicas);
    let mut output = vec![];
    for _ in 0..2 {
        for (_, p) in model.parameters() {
            p.zero_grad();
        }
        let x: Vec<f32> = rows.iter().flat_map(|&r| images[r * row..][..row].iter().copied()).collect();
        let y: Vec<i32> = rows.iter().map(|&r| labels[r]).collect();
        let x = Var::constant(Tensor::from_vec(x, &[rows.len(), 2, 5, 5], &cpu).unwrap());
        let logits = model.forward(&x).unwrap();
        output = logits.value().to_vec().unwrap();
        let y = Tensor::from_vec_i32(y, &[rows.len()], &cpu).unwrap();
        CrossEntropyLoss::new().forward(&logits, &y).unwrap().backward().unwrap();
    }
    Seen {
        output,
        grads: model.parameters().iter().map(|(_, p)| p.grad().unwrap().to_vec().unwrap()).collect(),
        buffers: model
            .buffers()
            .iter()
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .map(|(_, t)| t.to_vec().unwrap())
            .collect(),
    }
}

#[test]
fn processes_sharing_a_batch_compute_what_one_process_computes_on_it() {
    let batch = 12;
    let images: Vec<f32> = (0..batch * 50).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0).sin()).collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i * 5 % 3).collect();
    let alone = train(&images, &labels, &(0..batch).collect::<Vec<_>>(), None);
    for size in [2, 3] {
        let slots = Arc::new(Mutex::new(vec![vec![]; size]));
        let barrier = Arc::new(Barrier::new(size));
        let seen: Vec<Seen> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..size)
                .map(|rank| {
                    let replicas = Threads { rank, size, slots: slots.clone(), barrier: barrier.clone() };
                    let (images, labels) = (&images, &labels);
                    scope.spawn(move || {
                        let rows: Vec<usize> = (rank..batch).step_by(size).collect();
                        train(images, labels, &rows, Some(Arc::new(replicas)))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, process) in seen.iter().enumerate() {
            // Its rows of the whole batch's logits, and the whole batch's running statistics.
            for (j, row) in process.output.chunks(3).enumerate() {
                let global = &alone.output[(j * size + rank) * 3..][..3];
                for (a, b) in row.iter().zip(global) {
                    assert!((a - b).abs() < 1e-5, "{size} processes, rank {rank}, row {j}: {row:?} vs {global:?}");
                }
            }
            for (mine, whole) in process.buffers.iter().zip(&alone.buffers) {
                assert_eq!(mine, whole, "{size} processes, rank {rank}: running statistics");
            }
        }
        for (k, whole) in alone.grads.iter().enumerate() {
            for (i, &expected) in whole.iter().enumerate() {
                let mean = seen.iter().map(|p| p.grads[k][i]).sum::<f32>() / size as f32;
                assert!(
                    (mean - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
                    "{size} processes, parameter {k}[{i}]: averaged gradient {mean}, one process {expected}"
                );
            }
        }
    }
}

/// Without being told of the others, each process normalises with its own rows'
/// statistics and draws its own mask: the test above can tell the difference.
#[test]
fn processes_not_told_of_each_other_compute_something_else() {
    let batch = 12;
    let images: Vec<f32> = (0..batch * 50).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0).sin()).collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i * 5 % 3).collect();
    let alone = train(&images, &labels, &(0..batch).collect::<Vec<_>>(), None);
    let rows: Vec<usize> = (0..batch).step_by(2).collect();
    let apart = train(&images, &labels, &rows, None);
    assert_ne!(apart.buffers, alone.buffers);
    let differs = apart.output.chunks(3).enumerate().any(|(j, row)| row != &alone.output[j * 2 * 3..][..3]);
    assert!(differs);
}
