//! softmax and log_softmax over an axis.

use kiln_wgsl::kernels::softmax::softmax;
use ndarray::{Axis, Ix3};

use super::view;
use crate::profile;
use crate::shape::normalize_axis;
use crate::{DType, Device, Result, Tensor};

impl Tensor {
    fn softmax_along(&self, name: &'static str, axis: isize, log: bool) -> Result<Tensor> {
        self.expect_dtype(name, DType::F32)?;
        let axis = normalize_axis(name, axis, self.rank())?;
        let (outer, n, inner) =
            (self.shape[..axis].iter().product(), self.shape[axis], self.shape[axis + 1..].iter().product());
        match &self.device() {
            Device::Cpu => {
                let mut out = vec![0.0f32; self.len()];
                let x = view(self.cpu_values(), &[outer, n, inner]).into_dimensionality::<Ix3>().expect("rank 3");
                let mut y = ndarray::ArrayViewMut3::from_shape((outer, n, inner), &mut out).expect("sized");
                for (lane, mut out_lane) in x.lanes(Axis(1)).into_iter().zip(y.lanes_mut(Axis(1))) {
                    let top = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let total: f32 = lane.iter().map(|&v| (v - top).exp()).sum();
                    for (o, &v) in out_lane.iter_mut().zip(lane.iter()) {
                        *o = if log { v - top - total.ln() } else { (v - top).exp() / total };
                    }
                }
                Ok(Tensor::cpu_f32(out, self.shape.clone()))
            }
            Device::Gpu(ctx) => {
                let out = softmax(ctx, self.gpu_buffer(), outer, n, inner, log)?;
                Ok(Tensor::gpu(out, self.shape.clone(), DType::F32))
            }
        }
    }

    /// exp(x) / Σ exp(x) along `axis`, computed stably (the maximum is subtracted first).
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        let _op = profile::enter("softmax");
        self.softmax_along("softmax", axis, false)
    }

    /// log(softmax(x)) along `axis`, without forming softmax(x).
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        let _op = profile::enter("log_softmax");
        self.softmax_along("log_softmax", axis, true)
    }
}
