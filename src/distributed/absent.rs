//! [`World`] in a build without the `distributed` feature: a type with no values, whose
//! [`World::init`] says how to build with MPI. It has the methods the programs that offer a
//! distributed mode call, so they compile the same either way.

use kiln_nn::Module;
use kiln_optim::{Hooked, Optimizer};
use kiln_tensor::Device;

use crate::training::{EpochMetrics, Result, TrainError};

/// What an averaging optimizer's hook is here, where there is none.
type StepHook = fn(&mut dyn Optimizer) -> kiln_autograd::Result<()>;

/// The processes of a data-parallel run: none can exist in this build.
pub enum World {}

impl World {
    /// Refuses: this build has no MPI.
    pub fn init() -> Result<Self> {
        Err(TrainError::Distributed(
            "this program was built without MPI: build it with `--features distributed` \
             (Open MPI's libopenmpi-dev and libclang needed; README, Data-parallel training)"
                .into(),
        ))
    }

    pub fn rank(&self) -> usize {
        match *self {}
    }

    pub fn size(&self) -> usize {
        match *self {}
    }

    pub fn gpu(&self) -> Result<Device> {
        match *self {}
    }

    pub fn cpu(&self) -> Device {
        match *self {}
    }

    pub fn best_device(&self) -> Device {
        match *self {}
    }

    pub fn replicate(&self, _model: &mut dyn Module) -> Result<()> {
        match *self {}
    }

    pub fn broadcast_bytes(&self, _bytes: Option<Vec<u8>>) -> Vec<u8> {
        match *self {}
    }

    pub fn abort(&self, _error: &dyn std::fmt::Display) -> ! {
        match *self {}
    }

    pub fn data_parallel<'a>(&'a self, _optimizer: &'a mut dyn Optimizer) -> Hooked<'a, StepHook> {
        match *self {}
    }

    pub fn global(&self, _metrics: &EpochMetrics) -> EpochMetrics {
        match *self {}
    }

    pub fn averaging(&self) -> (usize, std::time::Duration) {
        match *self {}
    }
}
