//! `DataLoader`: seeded shuffling, batching and transforms, with samples prepared on a
//! background thread; or, for a dataset kept on the GPU, batches gathered there.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use kiln_tensor::{Device, Tensor, random};

use crate::dataset::{Dataset, ImageDataset};
use crate::transform::Transform;
use crate::{DataError, Result};

/// One batch: images `[B, C, H, W]` (f32) and labels `[B]` (i32), on the loader's device.
#[derive(Clone, Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
}

#[derive(Clone)]
enum Source {
    /// Samples are loaded and transformed on the host, then uploaded batch by batch.
    Host(Arc<dyn Dataset>),
    /// The whole dataset was uploaded once as bytes; batches are gathered on the device.
    Resident { images: Tensor, labels: Tensor, shape: [usize; 3] },
}

/// Which part of every epoch a process of a data-parallel run takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shard {
    rank: usize,
    world: usize,
    /// Padded to equal shares (training) or the epoch exactly (evaluation).
    padded: bool,
}

#[derive(Clone)]
pub struct DataLoader {
    source: Source,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    shard: Option<Shard>,
    transform: Transform,
    device: Device,
    prefetch: usize,
}

impl DataLoader {
    /// Batches of `batch_size` from `dataset`, in order, untransformed, on the CPU, until the
    /// builder methods say otherwise.
    pub fn new(dataset: impl Dataset + 'static, batch_size: usize) -> Self {
        Self::with_source(Source::Host(Arc::new(dataset)), batch_size, Device::Cpu)
    }

    /// Uploads `dataset` to `device` once, as bytes; each batch is then gathered on the device
    /// from the epoch's indices, so the host only sends indices. Random augmentation runs on
    /// the host, so it is refused here; scaling and normalisation are done on the device.
    pub fn resident(dataset: &ImageDataset, batch_size: usize, device: &Device) -> Result<Self> {
        let n = dataset.len();
        let images = Tensor::from_vec_u8(dataset.images().to_vec(), &[n, dataset.image_len()], device)?;
        let labels = Tensor::from_vec_i32(dataset.labels().to_vec(), &[n], device)?;
        let source = Source::Resident { images, labels, shape: dataset.shape() };
        Ok(Self::with_source(source, batch_size, device.clone()))
    }

    /// The usual choice for `device` and `transform`: resident (see [`DataLoader::resident`])
    /// on a GPU, so only indices cross the bus — unless the transform augments at random,
    /// which runs on the host — and loaded on a host thread for the CPU.
    pub fn on_device(dataset: &ImageDataset, batch_size: usize, device: &Device, transform: Transform) -> Result<Self> {
        let loader = if device.is_gpu() && !transform.is_random() {
            Self::resident(dataset, batch_size, device)?
        } else {
            Self::new(dataset.clone(), batch_size).to_device(device)
        };
        Ok(loader.transform(transform))
    }

    fn with_source(source: Source, batch_size: usize, device: Device) -> Self {
        Self {
            source,
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            shard: None,
            transform: Transform::default(),
            device,
            prefetch: 4,
        }
    }

    /// Reorder the samples every epoch (the order depends only on the seed and the epoch).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed for shuffling and augmentation.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Skip the last batch of an epoch when it is smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Takes process `rank`'s share of each epoch, of `world` processes, as PyTorch's
    /// `DistributedSampler` (without drop_last) shares it: every process draws the same
    /// seeded order, padded with its first indices to a multiple of `world`, and takes every
    /// `world`-th index from its rank on. The shares are disjoint but for the padding, and
    /// equal in size, so every process takes the same number of steps.
    pub fn shard(mut self, rank: usize, world: usize) -> Result<Self> {
        if rank >= world {
            return Err(DataError::Invalid(format!("rank {rank} is not one of a world of {world} processes")));
        }
        self.shard = Some(Shard { rank, world, padded: true });
        Ok(self)
    }

    /// As [`DataLoader::shard`] but without the padding: the shares together are the epoch
    /// exactly, and differ in size by up to one sample. For evaluation, whose figures
    /// [`DataLoader::shard`]'s repeated samples would skew; not for training, where every
    /// process must take the same number of steps.
    pub fn shard_unpadded(self, rank: usize, world: usize) -> Result<Self> {
        let mut sharded = self.shard(rank, world)?;
        sharded.shard = Some(Shard { rank, world, padded: false });
        Ok(sharded)
    }

    /// This loader over the whole of every epoch again, without its [`DataLoader::shard`]:
    /// what rank 0 of a data-parallel run reports on at the end.
    pub fn unsharded(&self) -> Self {
        Self { shard: None, ..self.clone() }
    }

    pub fn transform(mut self, transform: Transform) -> Self {
        self.transform = transform;
        self
    }

    /// Where batches are delivered (host-loaded datasets; a resident one stays on its device).
    pub fn to_device(mut self, device: &Device) -> Self {
        if matches!(self.source, Source::Host(_)) {
            self.device = device.clone();
        }
        self
    }

    /// How many batches the background thread may prepare ahead.
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// The samples of one epoch: the dataset's, or this process's share ([`DataLoader::shard`]).
    pub fn num_samples(&self) -> usize {
        match self.shard {
            Some(Shard { world, padded: true, .. }) => self.dataset_len().div_ceil(world),
            Some(Shard { rank, world, padded: false }) => self.dataset_len().saturating_sub(rank).div_ceil(world),
            None => self.dataset_len(),
        }
    }

    fn dataset_len(&self) -> usize {
        match &self.source {
            Source::Host(dataset) => dataset.len(),
            Source::Resident { labels, .. } => labels.len(),
        }
    }

    fn sample_shape(&self) -> [usize; 3] {
        match &self.source {
            Source::Host(dataset) => dataset.sample_shape(),
            Source::Resident { shape, .. } => *shape,
        }
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.num_samples();
        if self.batch_size == 0 {
            0
        } else if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample order of `epoch` (this process's share of it, when sharded).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset_len();
        let order: Vec<usize> =
            if self.shuffle { random::permutation(n, random::derive(self.seed, epoch)) } else { (0..n).collect() };
        match self.shard {
            Some(Shard { rank, world, padded }) => {
                let total = if padded { n.div_ceil(world) * world } else { n };
                order.iter().cycle().take(total).skip(rank).step_by(world).copied().collect()
            }
            None => order,
        }
    }

    /// The batches of epoch `epoch` (0, 1, …): shuffled and augmented by the seed and epoch.
    pub fn epoch(&self, epoch: u64) -> Result<Batches> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of epoch `epoch` from batch `first` on: the rest of an interrupted epoch,
    /// each batch as [`DataLoader::epoch`] gives it (augmentation follows the sample, not
    /// its place), without making the batches before it.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Result<Batches> {
        if self.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        // An epoch of no batches would "train" on nothing and report figures of nothing.
        // (An evaluation share may be empty where the dataset is not: it has no batches.)
        let samples = self.num_samples();
        if self.dataset_len() == 0 {
            return Err(DataError::Invalid("the dataset is empty: an epoch would have no batch".into()));
        }
        if self.drop_last && self.batch_size > samples {
            return Err(DataError::Invalid(format!(
                "batch size {} exceeds the dataset's {samples} samples and drop_last drops the one partial batch: \
                 an epoch would have no batch",
                self.batch_size
            )));
        }
        let shape = self.sample_shape();
        self.transform.check(shape[0])?;
        if first > self.len() {
            return Err(DataError::Invalid(format!("batch {first} is past the epoch's {} batches", self.len())));
        }
        let mut order = self.order(epoch);
        order.truncate(self.len() * self.batch_size);
        order.drain(..(first * self.batch_size).min(order.len()));
        let batch_shape = |b: usize| [b, shape[0], shape[1], shape[2]];
        let epoch_seed = random::derive(self.seed ^ 0xA55A, epoch);
        match &self.source {
            Source::Host(dataset) => {
                let (sender, receiver) = sync_channel(self.prefetch);
                let (dataset, transform, batch_size) = (dataset.clone(), self.transform.clone(), self.batch_size);
                let plan = order.clone();
                let worker = std::thread::Builder::new()
                    .name("kiln-data-loader".into())
                    .spawn(move || {
                        let sample_len: usize = shape.iter().product();
                        for chunk in plan.chunks(batch_size) {
                            let mut pixels = vec![0.0f32; chunk.len() * sample_len];
                            let mut labels = Vec::with_capacity(chunk.len());
                            for (slot, &index) in chunk.iter().enumerate() {
                                let image = &mut pixels[slot * sample_len..(slot + 1) * sample_len];
                                labels.push(dataset.load(index, image));
                                transform.apply(image, shape, random::derive(epoch_seed, index as u64));
                            }
                            if sender.send((pixels, labels)).is_err() {
                                return; // the consumer stopped early
                            }
                        }
                    })
                    .map_err(|e| DataError::Invalid(format!("could not start the loader thread: {e}")))?;
                let device = self.device.clone();
                Ok(Batches {
                    inner: Inner::Host { receiver, worker: Some(worker), device, shape: batch_shape(1) },
                    remaining: self.len() - first,
                })
            }
            Source::Resident { images, labels, shape } => {
                if self.transform.is_random() {
                    return Err(DataError::Invalid(
                        "random augmentation runs on the host: use DataLoader::new for augmented training".into(),
                    ));
                }
                let normalize = match &self.transform.normalize {
                    Some((mean, std)) => {
                        let c = shape[0];
                        Some((
                            Tensor::from_vec(mean.clone(), &[c, 1, 1], &self.device)?,
                            Tensor::from_vec(std.clone(), &[c, 1, 1], &self.device)?,
                        ))
                    }
                    None => None,
                };
                Ok(Batches {
                    inner: Inner::Resident(Box::new(ResidentEpoch {
                        images: images.clone(),
                        labels: labels.clone(),
                        order,
                        next: 0,
                        batch_size: self.batch_size,
                        shape: batch_shape(1),
                        scale: self.transform.scale,
                        normalize,
                    })),
                    remaining: self.len() - first,
                })
            }
        }
    }
}

type HostBatch = (Vec<f32>, Vec<i32>);

enum Inner {
    Host { receiver: Receiver<HostBatch>, worker: Option<JoinHandle<()>>, device: Device, shape: [usize; 4] },
    Resident(Box<ResidentEpoch>),
}

struct ResidentEpoch {
    images: Tensor,
    labels: Tensor,
    order: Vec<usize>,
    next: usize,
    batch_size: usize,
    shape: [usize; 4],
    scale: f32,
    normalize: Option<(Tensor, Tensor)>,
}

/// The batches of one epoch, in order.
pub struct Batches {
    inner: Inner,
    remaining: usize,
}

impl Batches {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        match &mut self.inner {
            Inner::Host { receiver, worker, device, shape } => match receiver.recv() {
                Ok((pixels, labels)) => {
                    let b = labels.len();
                    let images = Tensor::from_vec(pixels, &[b, shape[1], shape[2], shape[3]], device)?;
                    let labels = Tensor::from_vec_i32(labels, &[b], device)?;
                    Ok(Some(Batch { images, labels }))
                }
                // The worker ended: either done, or it panicked, which must not pass for a
                // short epoch.
                Err(_) => match worker.take().map(JoinHandle::join) {
                    Some(Err(_)) => Err(DataError::Invalid("the data loader thread panicked".into())),
                    _ => Ok(None),
                },
            },
            Inner::Resident(epoch) => {
                let ResidentEpoch { images, labels, order, next, batch_size, shape, scale, normalize } = epoch.as_mut();
                if *next >= order.len() {
                    return Ok(None);
                }
                let end = (*next + *batch_size).min(order.len());
                let picks = &order[*next..end];
                *next = end;
                let b = picks.len();
                let mut x = images.index_select_to_f32(picks, *scale)?.reshape(&[b, shape[1], shape[2], shape[3]])?;
                if let Some((mean, std)) = normalize {
                    x = x.sub(mean)?.div(std)?;
                }
                Ok(Some(Batch { images: x, labels: labels.index_select(picks)? }))
            }
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.next_batch().transpose()?;
        self.remaining = self.remaining.saturating_sub(1);
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
