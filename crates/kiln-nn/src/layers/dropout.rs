use std::sync::Arc;

use kiln_autograd::Var;
use kiln_tensor::{Device, Tensor, random};

use crate::export::GraphBuilder;
use crate::replicas::local_rows;
use crate::{Module, NnError, Replicas, Result, Seeds};

/// Inverted dropout, as `torch.nn.Dropout`: in training mode each call draws its mask from
/// the next seed of this layer's own stream; in evaluation mode it is the identity. In a
/// data-parallel run each process applies its rows of the whole batch's mask
/// ([`crate::Replicas`]).
pub struct Dropout {
    pub p: f32,
    seed: u64,
    calls: u64,
    training: bool,
    replicas: Option<Arc<dyn Replicas>>,
}

impl Dropout {
    pub fn new(p: f32, seeds: &mut Seeds) -> Self {
        Self { p, seed: seeds.next_seed(), calls: 0, training: true, replicas: None }
    }

    /// This process's rows of the mask (scaled by 1/(1−p)) the whole shared batch gets:
    /// dropout of ones, drawn on the host, where every device draws the same mask.
    fn mask_rows(&self, replicas: &dyn Replicas, local: &Tensor, seed: u64) -> Result<Tensor> {
        let mut shape = local.shape().to_vec();
        shape[0] *= replicas.size();
        let mask = Tensor::ones(&shape, &Device::Cpu)?.dropout(self.p, seed, true)?;
        Ok(local_rows(replicas, &mask, &local.device())?)
    }
}

impl Module for Dropout {
    fn extra_repr(&self) -> String {
        format!("p={}, inplace=False", crate::python_float(self.p))
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        if !self.training {
            return Ok(input.clone());
        }
        self.calls += 1;
        let seed = random::derive(self.seed, self.calls);
        match &self.replicas {
            Some(replicas) => Ok(input.mul(&Var::constant(self.mask_rows(&**replicas, &input.value(), seed)?))?),
            None => Ok(input.dropout(self.p, seed, true)?),
        }
    }

    /// Evaluation mode: the identity.
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        Ok(graph.node("Identity", &[x], &[]))
    }

    fn local_random_state(&self) -> Vec<(String, u64)> {
        vec![("calls".into(), self.calls)]
    }

    fn set_local_random_state(&mut self, name: &str, position: u64) -> Result<()> {
        if name != "calls" {
            return Err(NnError::Checkpoint(format!("no random stream named '{name}'")));
        }
        self.calls = position;
        Ok(())
    }

    fn set_local_training(&mut self, training: bool) {
        self.training = training;
    }

    fn set_local_replicas(&mut self, replicas: Option<Arc<dyn Replicas>>) {
        self.replicas = replicas.filter(|r| r.size() > 1);
    }
}
