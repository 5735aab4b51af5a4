//! Size-classed free lists of device buffers.
//!
//! Creating and first binding a wgpu buffer is expensive, and a training step allocates the
//! same sizes every iteration, so buffers go back to a free list when their owner drops them
//! and the next request of the same class takes one from there.
//!
//! A buffer dropped while the open batch still uses it is free for some uses only. A kernel
//! may take it as its output at once: the compute pass orders that kernel's writes after the
//! earlier reads. An upload may not: wgpu performs `Queue::write_buffer` at the start of the
//! next submission, before the queued kernels that still read the old contents. So such a
//! buffer waits in `in_batch` until the batch is submitted, where only kernels take it.
//!
//! Of the buffers a request may take, it gets the one created first (the smallest id), not
//! the one released last: which buffers are free then depends only on what is alive, not on
//! the order things were dropped, so a training step's tensors land in the same buffers every
//! step and the bind groups cached for them are found again.

use std::collections::HashMap;

/// The smallest buffer handed out.
const MIN_CLASS_BYTES: u64 = 256;

/// Tensor data: bound as storage, copied to and from.
pub(crate) const STORAGE_USAGES: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

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

/// A device buffer with the number the bind-group cache knows it by (never reused).
pub(crate) struct PooledBuffer {
    pub(crate) id: u64,
    pub(crate) buffer: wgpu::Buffer,
}

/// Who may take a pooled buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// A kernel's output, written only by work recorded from now on.
    KernelOutput,
    /// The target of an upload (`Queue::write_buffer`).
    Upload,
}

/// Free buffers of one size class, sorted by id from largest to smallest, so `pop` gives
/// the oldest. Short lists: inserting in order is cheaper than a tree, and allocates only
/// when a list outgrows what it held before.
type FreeList = Vec<PooledBuffer>;

fn insert_sorted(list: &mut FreeList, buffer: PooledBuffer) {
    let at = list.partition_point(|b| b.id > buffer.id);
    list.insert(at, buffer);
}

fn oldest_id(list: Option<&FreeList>) -> Option<u64> {
    list?.last().map(|b| b.id)
}

#[derive(Default)]
pub(crate) struct BufferPool {
    /// Idle buffers no unsubmitted work references, by size class.
    idle: HashMap<u64, FreeList>,
    /// Idle buffers the open batch still references, by size class.
    in_batch: HashMap<u64, FreeList>,
    free_bytes: u64,
}

impl BufferPool {
    /// The oldest free buffer of `class` that `purpose` may take.
    pub(crate) fn take(&mut self, class: u64, purpose: Use) -> Option<PooledBuffer> {
        let idle = oldest_id(self.idle.get(&class));
        let in_batch = match purpose {
            Use::KernelOutput => oldest_id(self.in_batch.get(&class)),
            Use::Upload => None,
        };
        let list = match (idle, in_batch) {
            (_, None) => self.idle.get_mut(&class)?,
            (Some(i), Some(b)) if i < b => self.idle.get_mut(&class)?,
            (_, Some(_)) => self.in_batch.get_mut(&class)?,
        };
        let buffer = list.pop()?;
        self.free_bytes -= class;
        Some(buffer)
    }

    /// Returns a buffer; `in_batch` when the open batch still references it.
    pub(crate) fn give_back(&mut self, buffer: PooledBuffer, in_batch: bool) {
        let class = buffer.buffer.size();
        self.free_bytes += class;
        let lists = if in_batch { &mut self.in_batch } else { &mut self.idle };
        insert_sorted(lists.entry(class).or_default(), buffer);
    }

    /// The open batch was submitted: every buffer it referenced is idle for any use now.
    pub(crate) fn batch_submitted(&mut self) {
        for (class, list) in &mut self.in_batch {
            if !list.is_empty() {
                let idle = self.idle.entry(*class).or_default();
                idle.append(list);
                idle.sort_unstable_by_key(|b| std::cmp::Reverse(b.id));
            }
        }
    }

    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// Drops every pooled buffer, returning the device memory they held (wgpu frees a buffer
    /// that submitted work still uses once that work is done).
    pub(crate) fn clear(&mut self) {
        self.idle.clear();
        self.in_batch.clear();
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
