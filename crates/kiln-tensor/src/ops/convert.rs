//! Conversions between element types.

use kiln_wgsl::kernels::convert::{Source, to_f32};

use crate::profile;
use crate::tensor::{HostData, Storage};
use crate::{DType, Result, Tensor};

impl Tensor {
    /// The values as f32 (bytes and integers keep their numeric value).
    pub fn to_f32(&self) -> Result<Tensor> {
        let _op = profile::enter("to_f32");
        let as_f32 = |values: Vec<f32>| Ok(Tensor::cpu_f32(values, self.shape.clone()));
        let source = match &self.storage {
            Storage::Host(HostData::F32(_)) => return Ok(self.clone()),
            Storage::Host(HostData::I32(values)) => return as_f32(values.iter().map(|&v| v as f32).collect()),
            Storage::Host(HostData::U8(values)) => return as_f32(values.iter().map(|&v| v as f32).collect()),
            Storage::Gpu(gpu) => match gpu.dtype {
                DType::F32 => return Ok(self.clone()),
                DType::I32 => Source::I32,
                DType::U8 => Source::U8,
            },
        };
        let out = to_f32(&self.gpu_buffer().context(), self.gpu_buffer(), source, self.len())?;
        Ok(Tensor::gpu(out, self.shape.clone(), DType::F32))
    }
}
