//! State dicts and safetensors checkpoints with PyTorch's key names, so a file written here
//! loads with `model.load_state_dict(safetensors.torch.load_file(path))` and the reverse.
//!
//! f32 tensors are stored as F32; i32 ones (batch norm's `num_batches_tracked`) as I64,
//! PyTorch's integer type, and read back as i32.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_tensor::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Module, NnError, Result};

/// Parameters and buffers by name, as `model.state_dict()`.
pub type StateDict = BTreeMap<String, Tensor>;

fn checkpoint_error(path: &Path, why: impl std::fmt::Display) -> NnError {
    NnError::Checkpoint(format!("{}: {why}", path.display()))
}

/// Writes `state` to `path` as safetensors, atomically: the bytes go to a temporary file
/// beside it, which replaces `path` only once complete and synced, so a crash or a full disk
/// never leaves a truncated checkpoint in place of a good one.
pub fn save_state_dict(state: &StateDict, path: &Path) -> Result<()> {
    let mut payloads = Vec::with_capacity(state.len());
    for (name, tensor) in state {
        let (dtype, bytes) = match tensor.dtype() {
            DType::F32 => (Dtype::F32, tensor.to_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()),
            DType::I32 => (Dtype::I64, tensor.to_vec_i32()?.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect()),
            DType::U8 => (Dtype::U8, tensor.to_vec_u8()?),
        };
        payloads.push((name.clone(), dtype, tensor.shape().to_vec(), bytes));
    }
    let views = payloads
        .iter()
        .map(|(name, dtype, shape, bytes)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| checkpoint_error(path, e))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| checkpoint_error(path, e))?;
    write_atomically(path, &bytes).map_err(|e| checkpoint_error(path, e))
}

/// Replaces `path` with `bytes` so that it is never half-written: through a temporary file
/// beside it that is synced and renamed, the directory synced after (Unix). A write that
/// fails leaves the previous file as it was.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file path"))?;
    let temporary: PathBuf = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself lasts only once the directory is on disk (a power cut, not just
        // a killed process). Directories open for syncing only on Unix.
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    written.inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// Reads a safetensors checkpoint into CPU tensors.
pub fn load_state_dict(path: &Path) -> Result<StateDict> {
    state_dict_from_bytes(&std::fs::read(path).map_err(|e| checkpoint_error(path, e))?, path)
}

/// [`load_state_dict`] of a file's `bytes` read already (by another process, say); `path`
/// names it in errors.
pub fn state_dict_from_bytes(bytes: &[u8], path: &Path) -> Result<StateDict> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| checkpoint_error(path, format!("not a safetensors file: {e}")))?;
    let mut state = StateDict::new();
    for (name, view) in file.tensors() {
        let (shape, data) = (view.shape().to_vec(), view.data());
        let tensor = match view.dtype() {
            Dtype::F32 => {
                let values = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                Tensor::from_vec(values, &shape, &Device::Cpu)?
            }
            Dtype::I64 => {
                let values = data
                    .chunks_exact(8)
                    .map(|b| i32::try_from(i64::from_le_bytes(b.try_into().expect("8 bytes"))))
                    .collect::<std::result::Result<Vec<i32>, _>>()
                    .map_err(|_| checkpoint_error(path, format!("tensor '{name}' holds integers beyond 32 bits")))?;
                Tensor::from_vec_i32(values, &shape, &Device::Cpu)?
            }
            Dtype::U8 => Tensor::from_vec_u8(data.to_vec(), &shape, &Device::Cpu)?,
            other => {
                return Err(checkpoint_error(
                    path,
                    format!("tensor '{name}' has type {other:?}; Kiln reads F32, I64 and U8"),
                ));
            }
        };
        state.insert(name, tensor);
    }
    Ok(state)
}

/// The model's parameters and buffers, on the CPU, by their PyTorch names.
pub fn state_dict(model: &dyn Module) -> Result<StateDict> {
    let parameters = model.parameters().into_iter().map(|(name, p)| (name, p.value()));
    parameters.chain(model.buffers()).map(|(name, t)| Ok((name, t.to(&Device::Cpu)?))).collect()
}

/// Loads `state` into `model` (onto the devices its tensors are on), refusing — with every
/// problem named — a state with missing or unexpected keys or a tensor of the wrong shape or
/// type. Nothing is changed unless everything fits.
pub fn load_into(model: &mut dyn Module, state: &StateDict) -> Result<()> {
    load_matching(model, state, true).map(|_| ())
}

/// The keys that did not match when loading a state dict non-strictly, as PyTorch's
/// `load_state_dict(strict=False)` returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The model's parameters and buffers that the state dict lacks: left as they were.
    pub missing_keys: Vec<String>,
    /// The state dict's entries that the model has no place for: ignored.
    pub unexpected_keys: Vec<String>,
}

/// Loads the entries of `state` that the model has, as PyTorch's
/// `load_state_dict(strict=False)`: the model's other parameters and buffers keep their
/// values, and the report names them and the entries left over. A tensor of the wrong shape
/// or type is still refused, naming its key, and then nothing is changed.
pub fn load_into_non_strict(model: &mut dyn Module, state: &StateDict) -> Result<LoadReport> {
    load_matching(model, state, false)
}

fn load_matching(model: &mut dyn Module, state: &StateDict, strict: bool) -> Result<LoadReport> {
    let parameters = model.parameters();
    let buffers = model.buffers();
    let current: Vec<(String, Tensor)> = parameters.iter().map(|(n, p)| (n.clone(), p.value())).collect();
    let expected: BTreeMap<&str, &Tensor> = current.iter().chain(&buffers).map(|(n, t)| (n.as_str(), t)).collect();
    let mut report = LoadReport::default();
    let mut problems = Vec::new();
    for (name, want) in &expected {
        match state.get(*name) {
            None => report.missing_keys.push(name.to_string()),
            Some(got) if got.shape() != want.shape() || got.dtype() != want.dtype() => problems.push(format!(
                "'{name}' is {:?} {:?} in the checkpoint but {:?} {:?} in the model",
                got.dtype(),
                got.shape(),
                want.dtype(),
                want.shape()
            )),
            Some(_) => {}
        }
    }
    report.unexpected_keys = state.keys().filter(|k| !expected.contains_key(k.as_str())).cloned().collect();
    if strict {
        problems.extend(report.missing_keys.iter().map(|k| format!("missing '{k}'")));
        problems.extend(report.unexpected_keys.iter().map(|k| format!("unexpected '{k}'")));
    }
    if !problems.is_empty() {
        return Err(NnError::Checkpoint(format!("the state does not fit the model: {}", problems.join("; "))));
    }
    for (name, p) in &parameters {
        if let Some(value) = state.get(name) {
            p.update(|t| {
                *t = value.to(&t.device())?;
                Ok(())
            })?;
        }
    }
    for (name, current) in buffers {
        if let Some(value) = state.get(&name) {
            model.set_buffer(&name, value.to(&current.device())?)?;
        }
    }
    Ok(report)
}

/// Saves `model`'s state to `path` (see [`save_state_dict`]).
pub fn save(model: &dyn Module, path: &Path) -> Result<()> {
    save_state_dict(&state_dict(model)?, path)
}

/// Loads the checkpoint at `path` into `model` (see [`load_into`]).
pub fn load(model: &mut dyn Module, path: &Path) -> Result<()> {
    load_into(model, &load_state_dict(path)?)
}
