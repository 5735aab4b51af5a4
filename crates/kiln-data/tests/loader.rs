//! The DataLoader: reproducible order from the seed, batching rules, transforms, the
//! background thread, and the device-resident mode on the GPU.

use kiln_data::{DataLoader, Dataset, ImageDataset, Transform, numbered_classes};
use kiln_tensor::Device;
use kiln_wgsl::testing::context_or_skip;

/// 10 one-pixel-wide images whose pixels encode their index, labels index % 3.
fn indexed(n: usize) -> ImageDataset {
    let images = (0..n).flat_map(|i| [i as u8, (i as u8).wrapping_add(100), 7, 9]).collect();
    ImageDataset::new(images, (0..n as i32).map(|i| i % 3).collect(), [1, 2, 2], numbered_classes(3)).unwrap()
}

/// The sample index each image of an epoch came from (its first pixel).
fn epoch_indices(loader: &DataLoader, epoch: u64) -> Vec<Vec<usize>> {
    loader
        .epoch(epoch)
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            let pixels = b.images.to_vec().unwrap();
            pixels.chunks(4).map(|img| img[0] as usize).collect()
        })
        .collect()
}

const PINNED_ORDER: [usize; 10] = [9, 2, 3, 8, 4, 6, 7, 0, 5, 1];

#[test]
fn order_is_reproducible_from_the_seed() {
    let loader = |seed| DataLoader::new(indexed(50), 8).shuffle(true).seed(seed);
    let first = epoch_indices(&loader(1), 0);
    assert_eq!(first, epoch_indices(&loader(1), 0), "same seed, same order");
    assert_ne!(first, epoch_indices(&loader(2), 0), "another seed, another order");
    assert_ne!(first, epoch_indices(&loader(1), 1), "each epoch reshuffles");
    let mut all: Vec<usize> = first.concat();
    all.sort();
    assert_eq!(all, (0..50).collect::<Vec<_>>(), "every sample exactly once");
    // The order is a function of the seed alone, pinned so it cannot drift between releases
    // or machines.
    assert_eq!(DataLoader::new(indexed(10), 4).shuffle(true).seed(1).order(0), PINNED_ORDER);
}

#[test]
fn shards_share_each_epoch_as_distributed_sampler_does() {
    // PyTorch's DistributedSampler(shuffle=False) over 10 samples and 3 replicas: the
    // indices padded with 0 and 1 to 12, then every third from each rank.
    let plain = |rank| DataLoader::new(indexed(10), 2).shard(rank, 3).unwrap().order(0);
    assert_eq!([plain(0), plain(1), plain(2)], [vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]);

    let whole = DataLoader::new(indexed(10), 2).shuffle(true).seed(5);
    for world in 1..=4usize {
        let share = 10usize.div_ceil(world);
        let shards: Vec<DataLoader> = (0..world)
            .map(|rank| DataLoader::new(indexed(10), 2).shuffle(true).seed(5).shard(rank, world).unwrap())
            .collect();
        for epoch in 0..3 {
            let padded: Vec<usize> = whole.order(epoch).into_iter().cycle().take(share * world).collect();
            for (rank, shard) in shards.iter().enumerate() {
                let expected: Vec<usize> = padded.iter().skip(rank).step_by(world).copied().collect();
                assert_eq!(shard.order(epoch), expected, "rank {rank} of {world}, epoch {epoch}");
                assert_eq!(
                    (shard.num_samples(), shard.len()),
                    (share, share.div_ceil(2)),
                    "every rank takes as many steps"
                );
                // The batches follow the share.
                assert_eq!(epoch_indices(shard, epoch).concat(), expected);
            }
            let mut all: Vec<usize> = shards.iter().flat_map(|s| s.order(epoch)).collect();
            all.sort();
            let mut every = padded.clone();
            every.sort();
            assert_eq!(all, every, "the shares together are the padded epoch, each sample in one share");
        }
    }
    // Evaluation's shares: the epoch exactly, with no repeats, one sample apart at most.
    let unpadded = |rank, world| DataLoader::new(indexed(10), 2).shard_unpadded(rank, world).unwrap();
    assert_eq!([0, 1, 2].map(|rank| unpadded(rank, 3).order(0)), [vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
    assert_eq!([0, 1, 2].map(|rank| unpadded(rank, 3).num_samples()), [4, 3, 3]);
    assert_eq!(epoch_indices(&unpadded(1, 3), 0), [vec![1, 4], vec![7]]);
    assert_eq!(unpadded(1, 3).unsharded().order(0), (0..10).collect::<Vec<_>>(), "the whole epoch again");
    let lone = DataLoader::new(indexed(2), 2).shard_unpadded(2, 3).unwrap();
    assert_eq!((lone.num_samples(), lone.len(), lone.order(0)), (0, 0, vec![]));
    assert_eq!(lone.epoch(0).unwrap().count(), 0, "a share of nothing is no batches, not an error");
    let refused = DataLoader::new(indexed(10), 2).shard(3, 3).err().expect("rank 3 of 3").to_string();
    assert!(refused.contains("rank 3 is not one of a world of 3"), "{refused}");
    assert!(DataLoader::new(indexed(10), 2).shard(0, 0).is_err());
}

#[test]
fn batching_and_drop_last() {
    let plain = DataLoader::new(indexed(10), 4);
    let sizes: Vec<usize> = epoch_indices(&plain, 0).iter().map(Vec::len).collect();
    assert_eq!((plain.len(), sizes), (3, vec![4, 4, 2]));
    assert_eq!(epoch_indices(&plain, 0).concat(), (0..10).collect::<Vec<_>>(), "no shuffle: in order");
    let dropping = DataLoader::new(indexed(10), 4).drop_last(true);
    assert_eq!(dropping.len(), 2);
    assert_eq!(epoch_indices(&dropping, 0).concat(), (0..8).collect::<Vec<_>>());
    assert!(DataLoader::new(indexed(10), 0).epoch(0).is_err());
    // Nothing to train on is an error, not an epoch of no batches.
    let empty = DataLoader::new(indexed(0), 4).epoch(0).err().unwrap().to_string();
    assert!(empty.contains("the dataset is empty"), "{empty}");
    let short = DataLoader::new(indexed(3), 4).drop_last(true).epoch(0).err().unwrap().to_string();
    assert!(short.contains("batch size 4 exceeds the dataset's 3 samples and drop_last"), "{short}");
    assert_eq!(epoch_indices(&DataLoader::new(indexed(3), 4), 0), [vec![0, 1, 2]], "without drop_last: one batch");

    let batch = DataLoader::new(indexed(10), 4).epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.images.shape(), &[4, 1, 2, 2]);
    assert_eq!(batch.labels.to_vec_i32().unwrap(), vec![0, 1, 2, 0]);
}

/// An interrupted epoch goes on from its next batch with the same batches, augmented alike.
#[test]
fn an_epoch_resumes_from_a_batch() {
    let images = |loader: &DataLoader, first| -> Vec<Vec<f32>> {
        loader.epoch_from(2, first).unwrap().map(|b| b.unwrap().images.to_vec().unwrap()).collect()
    };
    for augmented in [false, true] {
        let transform = if augmented { Transform::to_float().horizontal_flip(true) } else { Transform::to_float() };
        let loader = DataLoader::new(indexed(10), 4).shuffle(true).seed(3).transform(transform);
        let whole = images(&loader, 0);
        assert_eq!(whole.len(), 3);
        assert_eq!(images(&loader, 1), whole[1..], "augmented: {augmented}");
        assert!(images(&loader, 3).is_empty(), "past the last batch: nothing");
        assert_eq!(loader.epoch_from(2, 1).unwrap().size_hint(), (2, Some(2)));
    }
    assert!(DataLoader::new(indexed(10), 4).epoch_from(0, 4).is_err(), "batch 4 of 3");
}

#[test]
fn transforms_apply_per_sample_and_reproducibly() {
    let scaled = DataLoader::new(indexed(3), 3).transform(Transform::to_float().normalize(&[0.5], &[0.25]));
    let images = scaled.epoch(0).unwrap().next().unwrap().unwrap().images.to_vec().unwrap();
    assert!((images[1] - ((100.0 / 255.0) - 0.5) / 0.25).abs() < 1e-6);

    let augmented =
        || DataLoader::new(indexed(20), 5).shuffle(true).seed(3).transform(Transform::to_float().brightness(0.5));
    let run = |loader: DataLoader| -> Vec<Vec<f32>> {
        loader.epoch(0).unwrap().map(|b| b.unwrap().images.to_vec().unwrap()).collect()
    };
    assert_eq!(run(augmented()), run(augmented()));
    assert_ne!(run(augmented()), run(augmented().seed(4)));
    let bad = DataLoader::new(indexed(3), 3).transform(Transform::to_float().normalize(&[0.5, 0.5], &[1.0, 1.0]));
    assert!(bad.epoch(0).is_err());
}

struct Broken;

impl Dataset for Broken {
    fn len(&self) -> usize {
        10
    }
    fn sample_shape(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn load(&self, index: usize, pixels: &mut [f32]) -> i32 {
        assert!(index < 5, "sample {index} is unreadable");
        pixels[0] = index as f32;
        0
    }
}

#[test]
fn a_failing_worker_is_an_error_not_a_short_epoch() {
    let batches: Vec<_> = DataLoader::new(Broken, 2).epoch(0).unwrap().collect();
    assert!(batches[..2].iter().all(Result::is_ok));
    assert!(batches.last().unwrap().is_err(), "the worker's panic surfaces as an error");
}

#[test]
fn stopping_early_ends_the_worker() {
    let loader = DataLoader::new(indexed(200), 2).prefetch(1);
    let mut batches = loader.epoch(0).unwrap();
    assert!(batches.next().unwrap().is_ok());
    drop(batches); // the worker sees the closed channel and returns
}

#[test]
fn resident_batches_equal_host_batches_on_the_gpu() {
    let Some(ctx) = context_or_skip("resident_batches_equal_host_batches_on_the_gpu") else { return };
    let gpu = Device::Gpu(ctx);
    let data = indexed(37);
    let transform = Transform::to_float().normalize(&[0.3], &[0.2]);
    let host = DataLoader::new(data.clone(), 8).shuffle(true).seed(5).transform(transform.clone()).to_device(&gpu);
    let resident = DataLoader::resident(&data, 8, &gpu).unwrap().shuffle(true).seed(5).transform(transform.clone());
    // And a process's share of a data-parallel epoch, both ways.
    let host_share = DataLoader::new(data.clone(), 8).shuffle(true).seed(5).transform(transform.clone());
    let host_share = host_share.to_device(&gpu).shard(1, 3).unwrap();
    let resident_share = DataLoader::resident(&data, 8, &gpu).unwrap().shuffle(true).seed(5).transform(transform);
    let resident_share = resident_share.shard(1, 3).unwrap();
    assert_eq!((host.len(), host_share.len()), (resident.len(), resident_share.len()));
    let pairs = host.epoch(2).unwrap().zip(resident.epoch(2).unwrap());
    for (h, r) in pairs.chain(host_share.epoch(2).unwrap().zip(resident_share.epoch(2).unwrap())) {
        let (h, r) = (h.unwrap(), r.unwrap());
        assert!(r.images.device().is_gpu() && h.images.device().is_gpu());
        assert_eq!(h.images.shape(), r.images.shape());
        assert_eq!(h.labels.to_vec_i32().unwrap(), r.labels.to_vec_i32().unwrap());
        let (hv, rv) = (h.images.to_vec().unwrap(), r.images.to_vec().unwrap());
        assert!(hv.iter().zip(&rv).all(|(a, b)| (a - b).abs() < 1e-5), "{hv:?} vs {rv:?}");
    }
    let augmenting = DataLoader::resident(&data, 8, &gpu).unwrap().transform(Transform::to_float().rotation(10.0));
    assert!(augmenting.epoch(0).is_err(), "augmentation is host-only");
    let rotate = || Transform::to_float().rotation(10.0);
    let on_gpu = DataLoader::on_device(&data, 8, &gpu, Transform::to_float()).unwrap().transform(rotate());
    assert!(on_gpu.epoch(0).is_err(), "on_device keeps a GPU's data resident");
    let on_cpu = DataLoader::on_device(&data, 8, &Device::Cpu, Transform::to_float()).unwrap().transform(rotate());
    assert_eq!(on_cpu.epoch(0).unwrap().count(), 5, "and loads on the host for the CPU");
    // Given a random transform, on_device augments on the host and hands the GPU the batches
    // a host loader would.
    let augmented = DataLoader::on_device(&data, 8, &gpu, rotate()).unwrap().shuffle(true).seed(3);
    let host = DataLoader::new(data.clone(), 8).shuffle(true).seed(3).transform(rotate()).to_device(&gpu);
    for (a, h) in augmented.epoch(1).unwrap().zip(host.epoch(1).unwrap()) {
        let (a, h) = (a.unwrap(), h.unwrap());
        assert!(a.images.device().is_gpu());
        assert_eq!(a.images.to_vec().unwrap(), h.images.to_vec().unwrap());
    }
}
