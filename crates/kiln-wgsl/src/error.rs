use thiserror::Error;

/// Everything that can go wrong in the GPU runtime, as a value the caller can act on.
#[derive(Clone, Debug, Error)]
pub enum GpuError {
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),

    #[error("KILN_ADAPTER={wanted:?} matches none of the adapters present: {available}")]
    AdapterNotFound { wanted: String, available: String },

    #[error("could not open a device on adapter '{adapter}': {reason}")]
    RequestDevice { adapter: String, reason: String },

    #[error(
        "a buffer of {bytes} bytes exceeds the largest storage binding of {limit} bytes that \
         adapter '{adapter}' allows"
    )]
    BufferTooLarge { bytes: u64, limit: u64, adapter: String },

    #[error("a dispatch of {workgroups} workgroups exceeds what adapter '{adapter}' can launch")]
    DispatchTooLarge { workgroups: u64, adapter: String },

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),

    #[error("bad input found on the GPU: {0}")]
    KernelFault(String),

    #[error("{kernel}: {reason}")]
    InvalidLaunch { kernel: &'static str, reason: String },

    #[error("adapter '{adapter}' lacks {what}")]
    Unsupported { adapter: String, what: String },
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;
