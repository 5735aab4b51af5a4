//! Size-classed free lists of device buffers.
//!
//! Creating and first binding a wgpu buffer is expensive, and a training step allocates the
//! same sizes every iteration, so buffers go back to a free list when their owner drops them
//! and the next request of the same class takes one from there.

use std::collections::HashMap;

/// The smallest buffer handed out; also keeps uniform blocks at their 16-byte minimum.
const MIN_CLASS_BYTES: u64 = 256;

/// What a pooled buffer is for; buffers of different usages never mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BufferKind {
    /// Tensor data: bound as storage, copied to and from.
    Storage,
    /// Per-dispatch kernel parameters.
    Uniform,
}

impl BufferKind {
    pub(crate) fn usages(self) -> wgpu::BufferUsages {
        match self {
            BufferKind::Storage => {
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
            }
            BufferKind::Uniform => wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// Rounds a request up to its size class: steps of an eighth of the enclosing power of two
/// (never below 256 bytes), so a buffer wastes at most a quarter of its request or 256 bytes
/// while neighbouring sizes still share a class.
pub(crate) fn size_class(bytes: u64) -> u64 {
    if bytes <= MIN_CLASS_BYTES {
        return MIN_CLASS_BYTES;
    }
    let power = bytes.next_power_of_two();
    let step = (power / 8).max(MIN_CLASS_BYTES);
    bytes.div_ceil(step) * step
}

#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>,
    free_bytes: u64,
}

impl BufferPool {
    pub(crate) fn take(&mut self, kind: BufferKind, class: u64) -> Option<wgpu::Buffer> {
        let buffer = self.free.get_mut(&(kind, class))?.pop()?;
        self.free_bytes -= class;
        Some(buffer)
    }

    pub(crate) fn give_back(&mut self, kind: BufferKind, buffer: wgpu::Buffer) {
        let class = buffer.size();
        self.free_bytes += class;
        self.free.entry((kind, class)).or_default().push(buffer);
    }

    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Drops every idle buffer, returning the device memory they held.
    pub(crate) fn clear(&mut self) {
        self.free.clear();
        self.free_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_the_request_and_waste_little() {
        for bytes in [1u64, 4, 255, 256, 257, 1000, 4096, 4097, 65_537, 3_000_000, 123_456_789] {
            let class = size_class(bytes);
            assert!(class >= bytes, "{bytes} -> {class}");
            assert_eq!(class % 4, 0);
            assert!(class - bytes <= (bytes / 4).max(MIN_CLASS_BYTES), "{bytes} -> {class} wastes too much");
        }
    }

    #[test]
    fn nearby_sizes_share_a_class() {
        assert_eq!(size_class(1000), size_class(1020));
        assert_eq!(size_class(4), size_class(200));
    }
}
