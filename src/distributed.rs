//! Data-parallel training over MPI (cargo feature `distributed`), as PyTorch's DDP and
//! Horovod do it: one process per device, the same model in each, each process on its own
//! share of every epoch ([`kiln_data::DataLoader::shard`]), and the gradients averaged
//! across the processes after every backward pass, so that every process takes the step one
//! process would take on the whole batch.
//!
//! Sums are reduced onto rank 0 in MPI's fixed order and broadcast from there, so every
//! process holds the same bits (an all-reduce may add in a different order on each rank),
//! and gradients travel in a few large buckets rather than one message per tensor.
//!
//! ```no_run
//! # fn main() -> kiln::training::Result<()> {
//! # let (mut model, mut optimizer): (kiln::nn::Sequential, Box<dyn kiln::optim::Optimizer>) = todo!();
//! let world = kiln::distributed::World::init()?;
//! world.broadcast_model(&mut model)?; // every process starts from rank 0's weights
//! let mut stepped = world.data_parallel(optimizer.as_mut()); // averages, then steps
//! # Ok(()) }
//! ```

use kiln_autograd::Var;
use kiln_nn::Module;
use kiln_optim::{Hooked, Optimizer};
use kiln_tensor::{DType, Tensor};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use crate::training::{EpochMetrics, Result, TrainError};

/// Gradients per message: 4 Mi values (16 MiB), the order of DDP's 25 MB buckets.
const BUCKET: usize = 1 << 22;

/// This process's place among the processes `mpirun` started.
pub struct World {
    _universe: mpi::environment::Universe,
    world: SimpleCommunicator,
}

impl World {
    /// Joins the run (MPI_Init). A program started without `mpirun` is a world of one.
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| TrainError::Distributed("MPI is initialised already".into()))?;
        let world = universe.world();
        Ok(Self { _universe: universe, world })
    }

    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// The rank among the processes on this machine (which device to take): from the
    /// launcher's environment (Open MPI, MPICH, MVAPICH), else by asking MPI which
    /// processes share this machine's memory.
    pub fn local_rank(&self) -> usize {
        let from_launcher = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK"]
            .iter()
            .find_map(|name| std::env::var(name).ok()?.parse().ok());
        from_launcher.unwrap_or_else(|| self.world.split_shared(self.world.rank()).rank() as usize)
    }

    /// Sets every parameter and buffer of `model` to rank 0's, so every process starts the
    /// same (as DDP does when it wraps a model).
    pub fn broadcast_model(&self, model: &mut dyn Module) -> Result<()> {
        for (_, parameter) in model.parameters() {
            let value = self.broadcast_tensor(&parameter.value())?;
            parameter.update(|t| {
                *t = value;
                Ok(())
            })?;
        }
        for (name, buffer) in model.buffers() {
            let value = self.broadcast_tensor(&buffer)?;
            model.set_buffer(&name, value)?;
        }
        Ok(())
    }

    /// Sets `optimizer`'s state (moments, step counts, rates) to rank 0's: a resumed run
    /// whose processes read different checkpoints still goes on as one.
    pub fn broadcast_optimizer(&self, optimizer: &mut dyn Optimizer) -> Result<()> {
        let mut state = optimizer.state()?;
        for value in state.values_mut() {
            *value = self.broadcast_tensor(value)?;
        }
        Ok(optimizer.load_state(&state)?)
    }

    fn broadcast_tensor(&self, tensor: &Tensor) -> Result<Tensor> {
        let root = self.world.process_at_rank(0);
        let (shape, device) = (tensor.shape().to_vec(), tensor.device());
        Ok(match tensor.dtype() {
            DType::I32 => {
                let mut values = tensor.to_vec_i32()?;
                root.broadcast_into(&mut values[..]);
                Tensor::from_vec_i32(values, &shape, &device)?
            }
            _ => {
                let mut values = tensor.to_vec()?;
                root.broadcast_into(&mut values[..]);
                Tensor::from_vec(values, &shape, &device)?
            }
        })
    }

    /// Ends every process of the run (MPI_Abort) after `error` stopped this one, saying so:
    /// the others would otherwise wait for it in their next collective step forever.
    pub fn abort(&self, error: &dyn std::fmt::Display) -> ! {
        eprintln!("rank {} of {}: {error}; stopping every process", self.rank(), self.size());
        self.world.abort(1)
    }

    /// The elementwise sum of every process's `values`, the same bits on every process.
    pub fn sum(&self, values: &[f32]) -> Vec<f32> {
        let root = self.world.process_at_rank(0);
        let mut sum = vec![0.0f32; values.len()];
        if self.rank() == 0 {
            root.reduce_into_root(values, &mut sum[..], SystemOperation::sum());
        } else {
            root.reduce_into(values, SystemOperation::sum());
        }
        root.broadcast_into(&mut sum[..]);
        sum
    }

    /// Replaces each trainable parameter's gradient with the mean of all processes' (a
    /// parameter a process computed no gradient for counts as zeros there), in buckets of
    /// up to [`BUCKET`] values. Gradients are copied through host memory.
    pub fn average_gradients(&self, parameters: &[Var]) -> kiln_autograd::Result<()> {
        let trainable: Vec<&Var> = parameters.iter().filter(|p| p.requires_grad()).collect();
        let scale = 1.0 / self.size() as f32;
        let mut start = 0;
        while start < trainable.len() {
            let (mut end, mut total) = (start, 0);
            while end < trainable.len() && (end == start || total + trainable[end].value().len() <= BUCKET) {
                total += trainable[end].value().len();
                end += 1;
            }
            let mut flat = Vec::with_capacity(total);
            for parameter in &trainable[start..end] {
                match parameter.grad() {
                    Some(grad) => flat.extend(grad.to_vec()?),
                    None => flat.resize(flat.len() + parameter.value().len(), 0.0),
                }
            }
            let mut sums = self.sum(&flat).into_iter();
            for parameter in &trainable[start..end] {
                let value = parameter.value();
                let mean: Vec<f32> = sums.by_ref().take(value.len()).map(|s| s * scale).collect();
                parameter.set_grad(Some(Tensor::from_vec(mean, value.shape(), &value.device())?))?;
            }
            start = end;
        }
        Ok(())
    }

    /// `optimizer`, averaging the gradients across the processes before each of its steps:
    /// what a training epoch is given in a data-parallel run.
    pub fn data_parallel<'a>(&'a self, optimizer: &'a mut dyn Optimizer) -> impl Optimizer + 'a {
        Hooked::new(optimizer, move |optimizer: &mut dyn Optimizer| {
            self.average_gradients(optimizer.parameters())?;
            optimizer.step()
        })
    }

    /// An epoch's figures over every process's share: the loss and accuracy weighted by each
    /// process's samples, the samples summed, the slowest process's time.
    pub fn global(&self, metrics: &EpochMetrics) -> EpochMetrics {
        let n = metrics.samples as f32;
        let sums = self.sum(&[metrics.loss * n, metrics.accuracy * n, n]);
        let mut seconds = 0.0f64;
        self.world.all_reduce_into(&metrics.seconds, &mut seconds, SystemOperation::max());
        EpochMetrics {
            loss: sums[0] / sums[2].max(1.0),
            accuracy: sums[1] / sums[2].max(1.0),
            samples: sums[2] as usize,
            seconds,
        }
    }
}
