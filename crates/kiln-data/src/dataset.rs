//! The `Dataset` trait and the compact in-memory image dataset the readers produce.

use kiln_tensor::random;

use crate::{DataError, Result};

/// Anything a [`crate::DataLoader`] can draw samples from. Samples are images in C×H×W
/// order with pixel values as stored (0..255 for the bundled readers), and a class label.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [C, H, W] of every sample.
    fn sample_shape(&self) -> [usize; 3];

    /// Writes sample `index` into `pixels` (C·H·W values) and returns its label.
    fn load(&self, index: usize, pixels: &mut [f32]) -> i32;
}

/// Images as bytes (C×H×W each, back to back), one label per image, and the class names.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    images: Vec<u8>,
    labels: Vec<i32>,
    shape: [usize; 3],
    class_names: Vec<String>,
}

impl ImageDataset {
    /// Checks that `images` holds one C×H×W image per label and that every label indexes
    /// `class_names`.
    pub fn new(images: Vec<u8>, labels: Vec<i32>, shape: [usize; 3], class_names: Vec<String>) -> Result<Self> {
        let per_image: usize = shape.iter().product();
        if per_image == 0 || images.len() != labels.len() * per_image {
            return Err(DataError::Invalid(format!(
                "{} bytes are not {} images of shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        if let Some((i, &bad)) = labels.iter().enumerate().find(|&(_, &l)| l < 0 || l as usize >= class_names.len()) {
            return Err(DataError::Invalid(format!(
                "label {bad} of sample {i} is outside the {} classes",
                class_names.len()
            )));
        }
        Ok(Self { images, labels, shape, class_names })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The bytes of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[index * n..(index + 1) * n]
    }

    /// Every image, back to back.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    pub fn label(&self, index: usize) -> i32 {
        self.labels[index]
    }

    pub fn labels(&self) -> &[i32] {
        &self.labels
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// How many samples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The mean pixel value over every image.
    pub fn mean_pixel(&self) -> f64 {
        self.images.iter().map(|&p| p as u64).sum::<u64>() as f64 / self.images.len().max(1) as f64
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        let images = indices.iter().flat_map(|&i| self.image(i).iter().copied()).collect();
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        ImageDataset { images, labels, shape: self.shape, class_names: self.class_names.clone() }
    }

    /// The first `n` samples (or all, if fewer): a slice for quick experiments and tests.
    pub fn take(&self, n: usize) -> ImageDataset {
        self.subset(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// A seeded random split into (train, validation) with `validation` samples in the
    /// second part, as `torch.utils.data.random_split`. Both parts must hold samples: a
    /// split that leaves one empty would train, or validate, on nothing.
    pub fn split(&self, validation: usize, seed: u64) -> Result<(ImageDataset, ImageDataset)> {
        if validation == 0 || validation >= self.len() {
            return Err(DataError::Invalid(format!(
                "holding out {validation} of {} samples leaves {} empty",
                self.len(),
                if validation == 0 { "the validation part" } else { "nothing to train on" }
            )));
        }
        let order = random::permutation(self.len(), seed);
        let (val, train) = order.split_at(validation);
        Ok((self.subset(train), self.subset(val)))
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        ImageDataset::len(self)
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn load(&self, index: usize, pixels: &mut [f32]) -> i32 {
        for (out, &p) in pixels.iter_mut().zip(self.image(index)) {
            *out = p as f32;
        }
        self.labels[index]
    }
}

/// Class names "0", "1", … for datasets whose classes are numbered.
pub fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageDataset {
        let images = (0..10u8).flat_map(|i| [i, i, i, i]).collect();
        ImageDataset::new(images, (0..10).map(|i| i % 3).collect(), [1, 2, 2], numbered_classes(3)).unwrap()
    }

    #[test]
    fn split_partitions_the_samples_reproducibly() {
        let data = tiny();
        let (train, val) = data.split(3, 7).unwrap();
        assert_eq!((train.len(), val.len()), (7, 3));
        let mut seen: Vec<u8> = train.images().iter().chain(val.images()).step_by(4).copied().collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert_eq!(data.split(3, 7).unwrap(), (train, val.clone()));
        assert_ne!(data.split(3, 8).unwrap().1, val);
        assert!(data.split(11, 7).is_err());
        // Neither part may be empty.
        let empty = |held: usize| data.split(held, 7).unwrap_err().to_string();
        assert!(empty(0).contains("holding out 0 of 10 samples leaves the validation part empty"), "{}", empty(0));
        assert!(empty(10).contains("leaves nothing to train on"), "{}", empty(10));
    }

    #[test]
    fn construction_checks_sizes_and_labels() {
        assert!(ImageDataset::new(vec![0; 7], vec![0, 1], [1, 2, 2], numbered_classes(2)).is_err());
        assert!(ImageDataset::new(vec![0; 8], vec![0, 2], [1, 2, 2], numbered_classes(2)).is_err());
        assert!(ImageDataset::new(vec![0; 8], vec![0, -1], [1, 2, 2], numbered_classes(2)).is_err());
        assert_eq!(tiny().class_counts(), vec![4, 3, 3]);
    }
}
