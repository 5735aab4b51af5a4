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
//! world.replicate(&mut model)?; // rank 0's weights; batch norm over the global batch
//! let mut stepped = world.data_parallel(optimizer.as_mut()); // averages, then steps
//! # Ok(()) }
//! ```
//!
//! Without the feature, [`World`] is there but cannot be made ([`World::init`] says how to
//! build with MPI), so programs that offer a distributed mode (asl-app, the examples) build
//! either way without feature switches of their own.

#[cfg(feature = "distributed")]
mod mpi_world;
#[cfg(feature = "distributed")]
pub use mpi_world::World;

#[cfg(not(feature = "distributed"))]
mod absent;
#[cfg(not(feature = "distributed"))]
pub use absent::World;
