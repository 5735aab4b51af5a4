//! Kiln: a small deep-learning stack whose GPU work is hand-written WGSL run through wgpu.
//!
//! This facade re-exports the layered crates so an application can depend on `kiln` alone:
//! [`Tensor`] and [`Device`] from kiln-tensor, [`autograd`], [`nn`], [`optim`], [`data`],
//! the GPU runtime as [`wgsl`]; and it adds [`training`], the epoch loops and resumable
//! checkpoints the tutorial programs share, [`keras`] (compile, fit, evaluate, predict and
//! callbacks, as Keras shapes them), [`metrics`] (confusion matrix, per-class
//! precision/recall/F1), [`tutorials`] (each tutorial's model, optimizer, data and settings),
//! [`figures`] (curves, a captioned sample grid, the confusion matrix), [`schedules`] (the
//! learning-rate schedules by name), [`onnx`] export and [`tensorboard`] logs, and
//! [`distributed`] (data-parallel training over MPI, with the `distributed` feature).

pub use kiln_autograd as autograd;
pub use kiln_data as data;
pub use kiln_nn as nn;
pub use kiln_optim as optim;
pub mod distributed;
pub mod figures;
pub mod keras;
pub mod metrics;
pub mod onnx;
pub mod schedules;
pub mod tensorboard;
pub mod training;
pub mod tutorials;

pub use kiln_tensor::*;
pub use kiln_wgsl as wgsl;
