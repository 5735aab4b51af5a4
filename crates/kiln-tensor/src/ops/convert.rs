//! Conversions between element types.

use kiln_wgsl::kernels::convert::{Source, to_f32};

use crate::tensor::Data;
use crate::{DType, Device, Result, Tensor};

impl Tensor {
    /// The values as f32 (bytes and integers keep their numeric value).
    pub fn to_f32(&self) -> Result<Tensor> {
        let source = match self.dtype {
            DType::F32 => return Ok(self.clone()),
            DType::I32 => Source::I32,
            DType::U8 => Source::U8,
        };
        match (&self.device, &self.data) {
            (Device::Gpu(ctx), _) => {
                let out = to_f32(ctx, self.gpu_buffer(), source, self.len())?;
                Ok(Tensor::gpu(out, self.shape.clone(), DType::F32, &self.device))
            }
            (Device::Cpu, Data::CpuI32(values)) => {
                Ok(Tensor::cpu_f32(values.iter().map(|&v| v as f32).collect(), self.shape.clone()))
            }
            (Device::Cpu, Data::CpuU8(values)) => {
                Ok(Tensor::cpu_f32(values.iter().map(|&v| v as f32).collect(), self.shape.clone()))
            }
            (Device::Cpu, _) => unreachable!("f32 returned above"),
        }
    }
}
