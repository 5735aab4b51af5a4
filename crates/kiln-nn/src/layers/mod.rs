//! The layers of the tutorial models, one family per file.

mod activation;
mod batch_norm;
mod conv;
mod dropout;
mod linear;
mod pool;

pub use activation::{Flatten, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh};
pub use batch_norm::{BatchNorm1d, BatchNorm2d};
pub use conv::Conv2d;
pub use dropout::Dropout;
pub use linear::Linear;
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
