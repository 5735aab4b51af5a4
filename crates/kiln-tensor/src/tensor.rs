use std::fmt;
use std::sync::Arc;

use kiln_wgsl::GpuBuffer;
use kiln_wgsl::kernels::fill::{copy, fill};

use crate::{Device, Result, TensorError, profile, random};

/// Element types. `F32` for values; `I32` for class labels and indices (argmax); `U8` for
/// compact image storage (a dataset kept on the GPU), which only moves and converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    U8,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::U8 => 1,
        }
    }
}

/// Where the elements are, and so on which device: the host's data says its element type by
/// its variant; a GPU buffer carries its type and device beside it. Both are row-major and
/// contiguous, so reshaping is a new shape over the same, shared data.
#[derive(Clone)]
pub(crate) enum Storage {
    Host(HostData),
    Gpu(GpuData),
}

#[derive(Clone)]
pub(crate) enum HostData {
    F32(Arc<Vec<f32>>),
    I32(Arc<Vec<i32>>),
    U8(Arc<Vec<u8>>),
}

/// A GPU buffer knows its context, so the device is not stored twice.
#[derive(Clone)]
pub(crate) struct GpuData {
    pub(crate) buffer: Arc<GpuBuffer>,
    pub(crate) dtype: DType,
}

/// An n-dimensional array on a [`Device`]. Cloning shares the data; ops return new tensors.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) storage: Storage,
}

fn check_len(len: usize, shape: &[usize]) -> Result<()> {
    let want: usize = shape.iter().product();
    if len != want {
        return Err(TensorError::DataLength(len, shape.to_vec(), want));
    }
    Ok(())
}

impl Tensor {
    /// A tensor of `shape` holding `data` in row-major order.
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        Tensor::cpu_f32(data, shape.to_vec()).to(device)
    }

    /// An integer tensor (class labels, indices).
    pub fn from_vec_i32(data: Vec<i32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        Tensor::cpu_i32(data, shape.to_vec()).to(device)
    }

    /// A byte tensor (images as stored on disk).
    pub fn from_vec_u8(data: Vec<u8>, shape: &[usize], device: &Device) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        Tensor::cpu_u8(data, shape.to_vec()).to(device)
    }

    /// A tensor of one value (rank 0).
    pub fn scalar(value: f32, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(vec![value], &[], device)
    }

    pub fn full(shape: &[usize], value: f32, device: &Device) -> Result<Tensor> {
        let _op = profile::enter("full");
        let len = shape.iter().product();
        match device {
            Device::Cpu => Ok(Tensor::cpu_f32(vec![value; len], shape.to_vec())),
            Device::Gpu(ctx) => Ok(Tensor::gpu(fill(ctx, len, value.to_bits())?, shape.to_vec(), DType::F32)),
        }
    }

    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, device)
    }

    pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, device)
    }

    /// Uniform values in [0, 1). The same seed gives the same tensor on every device.
    pub fn rand(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let data = (0..len as u64).map(|i| random::uniform(seed, i)).collect();
        Tensor::from_vec(data, shape, device)
    }

    /// Standard normal values. The same seed gives the same tensor on every device.
    pub fn randn(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let data = (0..len as u64).map(|i| random::normal(seed, i)).collect();
        Tensor::from_vec(data, shape, device)
    }

    pub(crate) fn cpu_f32(data: Vec<f32>, shape: Vec<usize>) -> Tensor {
        Tensor { shape, storage: Storage::Host(HostData::F32(Arc::new(data))) }
    }

    pub(crate) fn cpu_i32(data: Vec<i32>, shape: Vec<usize>) -> Tensor {
        Tensor { shape, storage: Storage::Host(HostData::I32(Arc::new(data))) }
    }

    pub(crate) fn cpu_u8(data: Vec<u8>, shape: Vec<usize>) -> Tensor {
        Tensor { shape, storage: Storage::Host(HostData::U8(Arc::new(data))) }
    }

    pub(crate) fn gpu(buffer: GpuBuffer, shape: Vec<usize>, dtype: DType) -> Tensor {
        Tensor { shape, storage: Storage::Gpu(GpuData { buffer: Arc::new(buffer), dtype }) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Host(HostData::F32(_)) => DType::F32,
            Storage::Host(HostData::I32(_)) => DType::I32,
            Storage::Host(HostData::U8(_)) => DType::U8,
            Storage::Gpu(gpu) => gpu.dtype,
        }
    }

    /// Where the data is (cheap: a GPU device is a shared handle).
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host(_) => Device::Cpu,
            Storage::Gpu(gpu) => Device::Gpu(gpu.buffer.context()),
        }
    }

    /// The same tensor on `device`. A no-op when it is already there; otherwise one upload or
    /// one readback.
    pub fn to(&self, device: &Device) -> Result<Tensor> {
        let _op = profile::enter("to_device");
        if self.device() == *device {
            return Ok(self.clone());
        }
        let Device::Gpu(ctx) = device else {
            return Ok(match self.dtype() {
                DType::F32 => Tensor::cpu_f32(self.to_vec()?, self.shape.clone()),
                DType::I32 => Tensor::cpu_i32(self.to_vec_i32()?, self.shape.clone()),
                DType::U8 => Tensor::cpu_u8(self.to_vec_u8()?, self.shape.clone()),
            });
        };
        let buffer = match &self.storage {
            Storage::Host(HostData::F32(values)) => ctx.upload(values)?,
            Storage::Host(HostData::I32(values)) => ctx.upload(values)?,
            Storage::Host(HostData::U8(values)) => ctx.upload(values)?,
            // From one GPU to another: through the host.
            Storage::Gpu(_) => return self.to(&Device::Cpu)?.to(device),
        };
        Ok(Tensor::gpu(buffer, self.shape.clone(), self.dtype()))
    }

    /// The elements in row-major order. From a GPU this waits for the work that makes them.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let _op = profile::enter("to_vec");
        match &self.storage {
            Storage::Host(HostData::F32(values)) => Ok(values.as_ref().clone()),
            Storage::Gpu(gpu) if gpu.dtype == DType::F32 => Ok(gpu.buffer.context().read(&gpu.buffer, self.len())?),
            _ => Err(self.dtype_error("to_vec", DType::F32)),
        }
    }

    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        let _op = profile::enter("to_vec_i32");
        match &self.storage {
            Storage::Host(HostData::I32(values)) => Ok(values.as_ref().clone()),
            Storage::Gpu(gpu) if gpu.dtype == DType::I32 => Ok(gpu.buffer.context().read(&gpu.buffer, self.len())?),
            _ => Err(self.dtype_error("to_vec_i32", DType::I32)),
        }
    }

    pub fn to_vec_u8(&self) -> Result<Vec<u8>> {
        let _op = profile::enter("to_vec_u8");
        match &self.storage {
            Storage::Host(HostData::U8(values)) => Ok(values.as_ref().clone()),
            Storage::Gpu(gpu) if gpu.dtype == DType::U8 => {
                Ok(gpu.buffer.context().read_bytes(&gpu.buffer, self.len() as u64)?)
            }
            _ => Err(self.dtype_error("to_vec_u8", DType::U8)),
        }
    }

    /// The value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.len() != 1 {
            return Err(TensorError::InvalidArgument {
                op: "to_scalar",
                why: format!("tensor of shape {:?} has {} elements, not 1", self.shape, self.len()),
            });
        }
        Ok(self.to_vec()?[0])
    }

    /// The same data under another shape with as many elements. Never copies.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        if len != self.len() {
            return Err(TensorError::ShapeMismatch {
                op: "reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                why: "element counts differ",
            });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    pub(crate) fn expect_dtype(&self, op: &'static str, expected: DType) -> Result<()> {
        if self.dtype() != expected {
            return Err(self.dtype_error(op, expected));
        }
        Ok(())
    }

    pub(crate) fn dtype_error(&self, op: &'static str, expected: DType) -> TensorError {
        TensorError::DTypeMismatch { op, expected, got: self.dtype() }
    }

    pub(crate) fn expect_same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(TensorError::DeviceMismatch { op, lhs: self.device(), rhs: other.device() });
        }
        Ok(())
    }

    pub(crate) fn cpu_values(&self) -> &[f32] {
        crate::threads::expect_work();
        match &self.storage {
            Storage::Host(HostData::F32(values)) => values,
            _ => panic!("cpu_values on a {:?} tensor on {}", self.dtype(), self.device()),
        }
    }

    /// The integers of a host tensor (labels, pooling positions), or the error an op taking
    /// them reports.
    pub(crate) fn host_i32(&self, op: &'static str) -> Result<&[i32]> {
        match &self.storage {
            Storage::Host(HostData::I32(values)) => Ok(values),
            Storage::Host(_) => Err(self.dtype_error(op, DType::I32)),
            Storage::Gpu(_) => Err(TensorError::DeviceMismatch { op, lhs: Device::Cpu, rhs: self.device() }),
        }
    }

    /// Sole ownership of the data, for an in-place update: shared data is copied first, on
    /// either device, so other handles to it never see the change.
    pub(crate) fn unshare(&mut self) -> Result<()> {
        let words = (self.len() * self.dtype().size_in_bytes()).div_ceil(4);
        match &mut self.storage {
            Storage::Host(HostData::F32(values)) => {
                Arc::make_mut(values);
            }
            Storage::Host(HostData::I32(values)) => {
                Arc::make_mut(values);
            }
            Storage::Host(HostData::U8(values)) => {
                Arc::make_mut(values);
            }
            Storage::Gpu(GpuData { buffer, .. }) => {
                if Arc::get_mut(buffer).is_none() {
                    *buffer = Arc::new(copy(&buffer.context(), buffer, words)?);
                }
            }
        }
        Ok(())
    }

    /// The f32 values of an unshared CPU tensor, to update in place.
    pub(crate) fn cpu_values_mut(&mut self) -> &mut [f32] {
        crate::threads::expect_work();
        let dtype = self.dtype();
        match &mut self.storage {
            Storage::Host(HostData::F32(values)) => Arc::get_mut(values).expect("unshare() first"),
            _ => panic!("cpu_values_mut on a {dtype:?} tensor"),
        }
    }

    pub(crate) fn gpu_buffer(&self) -> &GpuBuffer {
        match &self.storage {
            Storage::Gpu(gpu) => &gpu.buffer,
            Storage::Host(_) => panic!("gpu_buffer on a host tensor"),
        }
    }
}

impl fmt::Debug for Tensor {
    /// Shape, type and device only: printing values would force a GPU readback.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {:?}, {})", self.shape, self.dtype(), self.device())
    }
}
