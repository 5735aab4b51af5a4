//! [`World`] over MPI: the `distributed` feature's.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_autograd::Var;
use kiln_nn::{Module, Replicas};
use kiln_optim::{Hooked, Optimizer};
use kiln_tensor::{DType, Device, Tensor};
use kiln_wgsl::{AdapterPreference, GpuContext};
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
    /// Gradient averages so far, and the time they took ([`World::averaging`]).
    averages: Cell<(usize, Duration)>,
}

impl World {
    /// Joins the run (MPI_Init). A program started without `mpirun` is a world of one.
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| TrainError::Distributed("MPI is initialised already".into()))?;
        let world = universe.world();
        Ok(Self { _universe: universe, world, averages: Cell::new((0, Duration::ZERO)) })
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

    /// How many processes of the run share this machine, from the launcher's environment
    /// or, failing that, from MPI.
    pub fn local_size(&self) -> usize {
        let from_launcher = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE"]
            .iter()
            .find_map(|name| std::env::var(name).ok()?.parse().ok());
        from_launcher.unwrap_or_else(|| self.world.split_shared(self.world.rank()).size() as usize)
    }

    /// This process's own GPU: hardware adapter number `local_rank` (modulo how many this
    /// machine has), so the processes of a machine with several GPUs take one each. Where
    /// `KILN_ADAPTER` names an adapter (lavapipe, say), every process takes that one.
    pub fn gpu(&self) -> Result<Device> {
        if std::env::var_os(kiln_wgsl::ADAPTER_ENV).is_some() {
            return Device::gpu().map_err(|e| TrainError::Distributed(format!("rank {}: {e}", self.rank())));
        }
        let adapters = kiln_wgsl::hardware_adapter_count();
        if adapters == 0 {
            return Err(TrainError::Distributed(format!(
                "rank {}: this machine has no hardware GPU adapter",
                self.rank()
            )));
        }
        GpuContext::new(&AdapterPreference::NthHardware(self.local_rank() % adapters))
            .map(Device::Gpu)
            .map_err(|e| TrainError::Distributed(format!("rank {}: {e}", self.rank())))
    }

    /// The CPU, with this process's share of the machine's cores: the processes on one
    /// machine would otherwise each start a thread per core and contend for them. A
    /// `RAYON_NUM_THREADS` the user set is left to decide. The calling thread, which is to
    /// train, becomes one of them ([`kiln_tensor::threads::compute_on_this_thread`]; a
    /// second call keeps the threads of the first).
    pub fn cpu(&self) -> Device {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = (cores / self.local_size().max(1)).max(1);
        let threads = std::env::var_os("RAYON_NUM_THREADS").is_none().then_some(share);
        kiln_tensor::threads::compute_on_this_thread(threads);
        Device::Cpu
    }

    /// [`World::gpu`] when this machine has a hardware GPU, else [`World::cpu`] with a notice.
    pub fn best_device(&self) -> Device {
        self.gpu().unwrap_or_else(|e| {
            if self.local_rank() == 0 {
                eprintln!("kiln: {e}; every process on this machine runs on the CPU");
            }
            self.cpu()
        })
    }

    /// Makes `model` this process's replica in the run: rank 0's weights, buffers and
    /// random-stream positions ([`World::broadcast_model`]), and batch norm and dropout
    /// computing over the whole global batch of each step as one process would
    /// ([`kiln_nn::Replicas`]; PyTorch's `SyncBatchNorm`, where DDP alone would normalise
    /// each process's share by itself). Call it before training; the model's forward passes
    /// in training mode then take part in collective steps, as the optimizer's do.
    pub fn replicate(&self, model: &mut dyn Module) -> Result<()> {
        self.broadcast_model(model)?;
        model.set_replicas(Some(Arc::new(WholeBatch { rank: self.rank(), size: self.size() })));
        Ok(())
    }

    /// Rank 0's `bytes` (a checkpoint it read, say) on every process; the others pass `None`.
    pub fn broadcast_bytes(&self, bytes: Option<Vec<u8>>) -> Vec<u8> {
        let root = self.world.process_at_rank(0);
        let mut bytes = bytes.unwrap_or_default();
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        bytes
    }

    /// Sets every parameter and buffer of `model` to rank 0's, so every process starts the
    /// same (as DDP does when it wraps a model), and its random streams (dropout's) to the
    /// same positions.
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
        for (name, mut position) in model.random_state() {
            self.world.process_at_rank(0).broadcast_into(&mut position);
            model.set_random_state(&name, position)?;
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
        // One write: `eprintln!` writes its pieces one by one to the unbuffered stderr, and
        // mpirun, forwarding them, could print its own abort banner between them.
        let message = format!("rank {} of {}: {error}; stopping every process\n", self.rank(), self.size());
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), message.as_bytes());
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
        let started = Instant::now();
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
        let (count, spent) = self.averages.get();
        self.averages.set((count + 1, spent + started.elapsed()));
        Ok(())
    }

    /// How many times this process has averaged gradients, and the time that took in all
    /// (copies to and from the device, the reduction and the broadcast, and any wait for
    /// slower processes): what data parallelism costs per step.
    pub fn averaging(&self) -> (usize, Duration) {
        self.averages.get()
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
        // A process with no samples (an evaluation share of nothing) has no figures to add.
        let weighted = |figure: f32| if n == 0.0 { 0.0 } else { figure * n };
        let sums = self.sum(&[weighted(metrics.loss), weighted(metrics.accuracy), n]);
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

/// The MPI world as batch norm and dropout see it ([`World::replicate`]). It names
/// `MPI_COMM_WORLD` afresh for each call rather than holding a communicator, which the
/// model's layers could not share; it is only called while the [`World`] lives.
struct WholeBatch {
    rank: usize,
    size: usize,
}

impl Replicas for WholeBatch {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, values: &[f32]) -> Vec<f32> {
        let mut all = vec![0.0f32; values.len() * self.size];
        SimpleCommunicator::world().all_gather_into(values, &mut all[..]);
        all
    }
}
