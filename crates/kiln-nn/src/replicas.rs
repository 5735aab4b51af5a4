//! The layers whose training-mode output depends on the whole batch, batch norm (its
//! statistics) and dropout (its mask), in a data-parallel run: each process holds only its
//! share of a step's batch, so that, told of the other processes ([`Module::set_replicas`]),
//! these layers compute what one process would on the whole batch. Batch norm gathers the
//! batch's rows from every process (PyTorch's `SyncBatchNorm` goes further and shares only
//! per-channel sums; gathering the rows gives the single process's statistics bit for bit);
//! dropout draws the whole batch's mask and keeps this process's rows of it, which needs no
//! messages at all.
//!
//! A process's rows are those `DataLoader::shard` gives it, as PyTorch's
//! `DistributedSampler` does: rows `rank`, `rank + size`, `rank + 2·size`, … of each global
//! batch, so process `r`'s local row `j` is global row `j·size + r`.
//!
//! [`Module::set_replicas`]: crate::Module::set_replicas

use kiln_tensor::{Device, Tensor};

/// The processes of a data-parallel run, as the layers above see them. `kiln::distributed`
/// implements it over MPI; every process must call [`Replicas::all_gather`] the same number
/// of times in the same order (the forward and backward passes of identical models do).
pub trait Replicas: Send + Sync {
    /// This process's place, `0..size()`.
    fn rank(&self) -> usize;
    /// How many processes share each batch.
    fn size(&self) -> usize;
    /// Every process's `values` (the same length on each), concatenated in rank order.
    fn all_gather(&self, values: &[f32]) -> Vec<f32>;
}

/// The whole batch, rows in the order one process would hold them, from every process's
/// `local` tensor `[rows, …]`, as a tensor on `local`'s device.
pub(crate) fn gather_batch(replicas: &dyn Replicas, local: &Tensor) -> kiln_tensor::Result<Tensor> {
    let shape = local.shape();
    let (rows, size) = (shape[0], replicas.size());
    let row = local.len() / rows.max(1);
    let by_rank = replicas.all_gather(&local.to_vec()?);
    let mut batch = vec![0.0f32; by_rank.len()];
    for (rank, share) in by_rank.chunks_exact(rows * row).enumerate() {
        for (j, values) in share.chunks_exact(row).enumerate() {
            let global = j * size + rank;
            batch[global * row..(global + 1) * row].copy_from_slice(values);
        }
    }
    let mut global_shape = shape.to_vec();
    global_shape[0] = rows * size;
    Tensor::from_vec(batch, &global_shape, &local.device())
}

/// This process's rows of a whole batch's `global` tensor, on `device`.
pub(crate) fn local_rows(replicas: &dyn Replicas, global: &Tensor, device: &Device) -> kiln_tensor::Result<Tensor> {
    let (rank, size) = (replicas.rank(), replicas.size());
    let mut shape = global.shape().to_vec();
    let row = global.len() / shape[0].max(1);
    shape[0] /= size;
    let values = global.to_vec()?;
    let mine: Vec<f32> = (0..shape[0]).flat_map(|j| values[(j * size + rank) * row..][..row].iter().copied()).collect();
    Tensor::from_vec(mine, &shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One process of `size` holding `rank`: its "gather" returns the shares that every
    /// process of a batch of `size · rows` rows numbered 0, 1, 2, … would send.
    struct Pretend {
        rank: usize,
        size: usize,
    }

    impl Replicas for Pretend {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_gather(&self, values: &[f32]) -> Vec<f32> {
            let rows = values.len() as f32 / 2.0;
            (0..self.size).flat_map(|r| (0..rows as usize).flat_map(move |j| [(j * self.size + r) as f32; 2])).collect()
        }
    }

    #[test]
    fn a_batch_gathered_from_strided_shares_is_in_global_order_and_splits_back() {
        let cpu = Device::Cpu;
        for (rank, size) in [(0, 1), (1, 2), (2, 3)] {
            let replicas = Pretend { rank, size };
            let local =
                Tensor::from_vec((0..8).map(|i| ((i / 2) * size + rank) as f32).collect(), &[4, 2], &cpu).unwrap();
            let batch = gather_batch(&replicas, &local).unwrap();
            assert_eq!(batch.shape(), &[4 * size, 2]);
            let expected: Vec<f32> = (0..4 * size).flat_map(|g| [g as f32; 2]).collect();
            assert_eq!(batch.to_vec().unwrap(), expected);
            assert_eq!(local_rows(&replicas, &batch, &cpu).unwrap().to_vec().unwrap(), local.to_vec().unwrap());
        }
    }
}
