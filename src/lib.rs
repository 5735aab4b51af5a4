pub use kiln_tensor::*;
pub use kiln_wgsl as wgsl;
