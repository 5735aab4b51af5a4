use kiln_autograd::Var;
use kiln_tensor::random;

use crate::export::GraphBuilder;
use crate::{Module, NnError, Result, Seeds};

/// Inverted dropout, as `torch.nn.Dropout`: in training mode each call draws its mask from
/// the next seed of this layer's own stream; in evaluation mode it is the identity.
pub struct Dropout {
    pub p: f32,
    seed: u64,
    calls: u64,
    training: bool,
}

impl Dropout {
    pub fn new(p: f32, seeds: &mut Seeds) -> Self {
        Self { p, seed: seeds.next_seed(), calls: 0, training: true }
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
        Ok(input.dropout(self.p, random::derive(self.seed, self.calls), true)?)
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
}
