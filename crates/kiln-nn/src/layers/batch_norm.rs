use std::sync::Arc;

use kiln_autograd::Var;
use kiln_tensor::{BatchNormConfig, Device, Pool2d, Tensor};

use crate::export::{Attribute, GraphBuilder};
use crate::replicas::{gather_batch, local_rows};
use crate::{Module, NnError, Replicas, Result};

/// Batch normalisation over channels, as `torch.nn.BatchNorm2d`: scale (`weight`, ones) and
/// shift (`bias`, zeros) as parameters; running mean (zeros) and variance (ones) as buffers,
/// updated in training mode with momentum 0.1; `num_batches_tracked` counts those updates.
/// In a data-parallel run its training statistics are the whole batch's, as
/// `torch.nn.SyncBatchNorm`'s ([`crate::Replicas`]).
pub struct BatchNorm2d {
    pub weight: Var,
    pub bias: Var,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: u64,
    pub config: BatchNormConfig,
    training: bool,
    replicas: Option<Arc<dyn Replicas>>,
}

impl BatchNorm2d {
    pub fn new(channels: usize) -> Result<Self> {
        let cpu = Device::Cpu;
        Ok(Self {
            weight: Var::parameter(Tensor::ones(&[channels], &cpu)?),
            bias: Var::parameter(Tensor::zeros(&[channels], &cpu)?),
            running_mean: Tensor::zeros(&[channels], &cpu)?,
            running_var: Tensor::ones(&[channels], &cpu)?,
            num_batches_tracked: 0,
            config: BatchNormConfig::default(),
            training: true,
            replicas: None,
        })
    }
}

impl BatchNorm2d {
    fn normalize(&mut self, input: &Var, config: BatchNormConfig) -> Result<Var> {
        if let Some(replicas) = self.replicas.clone().filter(|_| self.training) {
            return self.normalize_whole_batch(input, config, replicas);
        }
        let out = input.batch_norm2d(
            Some(&self.weight),
            Some(&self.bias),
            &mut self.running_mean,
            &mut self.running_var,
            &config,
            self.training,
        )?;
        if self.training {
            self.num_batches_tracked += 1;
        }
        Ok(out)
    }

    /// Training mode over a batch shared among `replicas`: the whole batch is gathered and
    /// normalised as one process would (the same statistics and running averages on every
    /// process), and each process keeps its rows; backward, the whole batch's output
    /// gradient is gathered in turn.
    fn normalize_whole_batch(
        &mut self,
        input: &Var,
        config: BatchNormConfig,
        replicas: Arc<dyn Replicas>,
    ) -> Result<Var> {
        let device = input.value().device();
        let batch = gather_batch(&*replicas, &input.value())?;
        let (weight, bias) = (self.weight.value(), self.bias.value());
        let (output, saved) = batch.batch_norm2d_train(
            Some(&weight),
            Some(&bias),
            &mut self.running_mean,
            &mut self.running_var,
            &config,
        )?;
        self.num_batches_tracked += 1;
        let mine = local_rows(&*replicas, &output, &device)?;
        Ok(Var::custom(mine, &[input, &self.weight, &self.bias], move |g| {
            let grads =
                gather_batch(&*replicas, g)?.batch_norm2d_backward(&batch, Some(&weight), true, &saved, true)?;
            // Every process computes the whole batch's scale and shift gradients from every
            // process's loss; averaged over the processes as every gradient is, each must
            // bring in 1/size of them.
            let share = 1.0 / replicas.size() as f32;
            let of_mine = |grad: Option<Tensor>| grad.map(|grad| grad.mul_scalar(share)).transpose();
            Ok(vec![Some(local_rows(&*replicas, &grads.input, &device)?), of_mine(grads.weight)?, of_mine(grads.bias)?])
        }))
    }
}

impl Module for BatchNorm2d {
    fn extra_repr(&self) -> String {
        let channels = self.weight.value().shape()[0];
        let (eps, momentum) = (crate::python_float(self.config.eps), crate::python_float(self.config.momentum));
        format!("{channels}, eps={eps}, momentum={momentum}, affine=True, bias=True, track_running_stats=True")
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        self.normalize(input, self.config)
    }

    fn forward_relu(&mut self, input: &Var) -> Option<Result<Var>> {
        Some(self.normalize(input, BatchNormConfig { relu: true, ..self.config }))
    }

    /// In training mode on one process, the three as one op; otherwise `None`, and the
    /// pooling runs on its own after [`Module::forward_relu`].
    fn forward_relu_max_pool(&mut self, input: &Var, pool: &Pool2d) -> Option<Result<Var>> {
        if !self.training || self.replicas.is_some() {
            return None;
        }
        let output = input.batch_norm2d_relu_max_pool2d(
            Some(&self.weight),
            Some(&self.bias),
            &mut self.running_mean,
            &mut self.running_var,
            &self.config,
            pool,
        );
        if output.is_ok() {
            self.num_batches_tracked += 1;
        }
        Some(output.map_err(Into::into))
    }

    /// BatchNormalization with the running statistics (evaluation mode).
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        let scale = graph.constant("weight", &self.weight.value())?;
        let shift = graph.constant("bias", &self.bias.value())?;
        let mean = graph.constant("running_mean", &self.running_mean)?;
        let var = graph.constant("running_var", &self.running_var)?;
        let epsilon = Attribute::Float(self.config.eps);
        Ok(graph.node("BatchNormalization", &[x, &scale, &shift, &mean, &var], &[("epsilon", epsilon)]))
    }

    fn local_parameters(&self) -> Vec<(String, Var)> {
        vec![("weight".into(), self.weight.clone()), ("bias".into(), self.bias.clone())]
    }

    fn local_buffers(&self) -> Vec<(String, Tensor)> {
        // Kept as a host counter; reported where the statistics are, as PyTorch's buffers move.
        let tracked = Tensor::from_vec_i32(vec![self.num_batches_tracked as i32], &[], &self.running_mean.device())
            .expect("one value for a rank-0 tensor");
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
            ("num_batches_tracked".into(), tracked),
        ]
    }

    fn set_local_buffer(&mut self, name: &str, value: Tensor) -> Result<()> {
        match name {
            "running_mean" => self.running_mean = value,
            "running_var" => self.running_var = value,
            "num_batches_tracked" => self.num_batches_tracked = value.to_vec_i32()?[0].max(0) as u64,
            _ => return Err(NnError::Checkpoint(format!("no buffer named '{name}'"))),
        }
        Ok(())
    }

    fn set_local_training(&mut self, training: bool) {
        self.training = training;
    }

    fn set_local_replicas(&mut self, replicas: Option<Arc<dyn Replicas>>) {
        self.replicas = replicas.filter(|r| r.size() > 1);
    }
}

/// Batch normalisation of `[N, C]` or `[N, C, L]`, as `torch.nn.BatchNorm1d`: a
/// [`BatchNorm2d`] (in `.0`: the same parameters, running statistics and state-dict names)
/// over the input seen as `[N, C, L, 1]`.
pub struct BatchNorm1d(pub BatchNorm2d);

impl BatchNorm1d {
    pub fn new(channels: usize) -> Result<Self> {
        Ok(Self(BatchNorm2d::new(channels)?))
    }

    /// `input` as the 2-D layer sees it, and the shape to give back.
    fn planes(input: &Var) -> Result<(Var, Vec<usize>)> {
        let shape = input.value().shape().to_vec();
        let planar = match shape.as_slice() {
            &[n, c] => vec![n, c, 1, 1],
            &[n, c, l] => vec![n, c, l, 1],
            other => {
                return Err(NnError::Invalid(format!("BatchNorm1d needs an [N, C] or [N, C, L] input, got {other:?}")));
            }
        };
        Ok((input.reshape(&planar)?, shape))
    }
}

impl Module for BatchNorm1d {
    fn extra_repr(&self) -> String {
        self.0.extra_repr()
    }

    fn forward(&mut self, input: &Var) -> Result<Var> {
        let (planar, shape) = Self::planes(input)?;
        Ok(self.0.forward(&planar)?.reshape(&shape)?)
    }

    fn forward_relu(&mut self, input: &Var) -> Option<Result<Var>> {
        let run = |norm: &mut BatchNorm2d| -> Result<Var> {
            let (planar, shape) = Self::planes(input)?;
            Ok(norm.normalize(&planar, BatchNormConfig { relu: true, ..norm.config })?.reshape(&shape)?)
        };
        Some(run(&mut self.0))
    }

    /// ONNX's BatchNormalization takes `[N, C]` and `[N, C, L]` as they are.
    fn export(&self, graph: &mut dyn GraphBuilder, x: &str) -> Result<String> {
        self.0.export(graph, x)
    }

    fn local_parameters(&self) -> Vec<(String, Var)> {
        self.0.local_parameters()
    }

    fn local_buffers(&self) -> Vec<(String, Tensor)> {
        self.0.local_buffers()
    }

    fn set_local_buffer(&mut self, name: &str, value: Tensor) -> Result<()> {
        self.0.set_local_buffer(name, value)
    }

    fn set_local_training(&mut self, training: bool) {
        self.0.set_local_training(training);
    }

    fn set_local_replicas(&mut self, replicas: Option<Arc<dyn Replicas>>) {
        self.0.set_local_replicas(replicas);
    }
}
