//! Per-sample transforms: seeded augmentation, scaling to floats and normalisation.
//!
//! Stages run in a fixed order, as torchvision pipelines usually do: geometric augmentation
//! (rotation, zoom, shift, whole-pixel shift, horizontal flip, in one bilinear warp),
//! photometric augmentation (brightness, contrast), both in pixel units and clamped to
//! 0..255; then `scale` (1/255 for `to_float`), then per-channel normalisation. Random draws depend only on the seed the
//! loader derives for (epoch, sample), so a run is reproducible whatever the thread timing.

use kiln_tensor::random;

use crate::{DataError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Rotation drawn from ±degrees.
    pub rotation_degrees: f32,
    /// Zoom factor drawn from 1 ± zoom.
    pub zoom: f32,
    /// Shift drawn from ± this fraction of the width and of the height.
    pub shift: f32,
    /// Shift by a whole number of pixels drawn from −n..=n in each direction, so the image
    /// stays sharp (a fractional shift blurs it): torchvision's `RandomCrop(size, padding=n)`.
    pub shift_pixels: usize,
    /// Mirror left–right with probability ½. Off for data where a flip changes the class
    /// (sign-language letters, digits).
    pub horizontal_flip: bool,
    /// Brightness factor drawn from 1 ± brightness.
    pub brightness: f32,
    /// Contrast factor drawn from 1 ± contrast, around the image's mean.
    pub contrast: f32,
    /// Multiplies every value after augmentation: 1/255 maps pixels to [0, 1].
    pub scale: f32,
    /// Per-channel (mean, std), applied after `scale`.
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
}

impl Default for Transform {
    /// The identity: pixel values as stored.
    fn default() -> Self {
        Self {
            rotation_degrees: 0.0,
            zoom: 0.0,
            shift: 0.0,
            shift_pixels: 0,
            horizontal_flip: false,
            brightness: 0.0,
            contrast: 0.0,
            scale: 1.0,
            normalize: None,
        }
    }
}

impl Transform {
    /// Pixels scaled to [0, 1], as torchvision's `ToTensor`.
    pub fn to_float() -> Self {
        Self { scale: 1.0 / 255.0, ..Self::default() }
    }

    /// `(x − mean[c]) / std[c]` per channel, after scaling.
    pub fn normalize(mut self, mean: &[f32], std: &[f32]) -> Self {
        self.normalize = Some((mean.to_vec(), std.to_vec()));
        self
    }

    pub fn rotation(mut self, degrees: f32) -> Self {
        self.rotation_degrees = degrees;
        self
    }

    pub fn zoom(mut self, zoom: f32) -> Self {
        self.zoom = zoom;
        self
    }

    pub fn shift(mut self, fraction: f32) -> Self {
        self.shift = fraction;
        self
    }

    pub fn shift_pixels(mut self, max: usize) -> Self {
        self.shift_pixels = max;
        self
    }

    pub fn horizontal_flip(mut self, enabled: bool) -> Self {
        self.horizontal_flip = enabled;
        self
    }

    pub fn brightness(mut self, amount: f32) -> Self {
        self.brightness = amount;
        self
    }

    pub fn contrast(mut self, amount: f32) -> Self {
        self.contrast = amount;
        self
    }

    /// True when any stage draws random numbers.
    pub fn is_random(&self) -> bool {
        self.is_geometric() || self.brightness > 0.0 || self.contrast > 0.0
    }

    fn is_geometric(&self) -> bool {
        self.rotation_degrees > 0.0
            || self.zoom > 0.0
            || self.shift > 0.0
            || self.shift_pixels > 0
            || self.horizontal_flip
    }

    /// Refuses settings that cannot work for images of `channels` channels.
    pub fn check(&self, channels: usize) -> Result<()> {
        if let Some((mean, std)) = &self.normalize {
            if mean.len() != channels || std.len() != channels {
                return Err(DataError::Invalid(format!(
                    "normalize has {} means and {} stds for {channels}-channel images",
                    mean.len(),
                    std.len()
                )));
            }
            if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
                return Err(DataError::Invalid(format!("normalize std {std:?} must be positive")));
            }
        }
        let amounts = [self.rotation_degrees, self.zoom, self.shift, self.brightness, self.contrast];
        if amounts.iter().any(|&a| a < 0.0 || !a.is_finite()) || self.zoom >= 1.0 {
            return Err(DataError::Invalid(format!("augmentation amounts must be finite, ≥ 0, zoom < 1: {self:?}")));
        }
        Ok(())
    }

    /// Transforms one C×H×W image in place; `seed` drives every random choice.
    pub fn apply(&self, image: &mut [f32], shape: [usize; 3], seed: u64) {
        let draw = |k: u64| random::uniform(seed, k) * 2.0 - 1.0; // in [-1, 1)
        if self.is_geometric() {
            let angle = (self.rotation_degrees * draw(0)).to_radians();
            let zoom = 1.0 + self.zoom * draw(1);
            let whole_pixels = |k: u64| {
                let choices = 2 * self.shift_pixels + 1;
                let pick = ((random::uniform(seed, k) * choices as f32) as usize).min(choices - 1);
                pick as f32 - self.shift_pixels as f32
            };
            let shift = (
                self.shift * draw(2) * shape[2] as f32 + whole_pixels(7),
                self.shift * draw(3) * shape[1] as f32 + whole_pixels(8),
            );
            let flip = self.horizontal_flip && draw(4) < 0.0;
            warp(image, shape, angle, zoom, shift, flip);
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            let brightness = 1.0 + self.brightness * draw(5);
            let contrast = 1.0 + self.contrast * draw(6);
            let mean = image.iter().sum::<f32>() / image.len().max(1) as f32;
            for v in image.iter_mut() {
                *v = (((*v - mean) * contrast + mean) * brightness).clamp(0.0, 255.0);
            }
        }
        let plane = shape[1] * shape[2];
        for (c, channel) in image.chunks_mut(plane).enumerate() {
            let (shift, divide) = match &self.normalize {
                Some((mean, std)) => (mean[c], std[c]),
                None => (0.0, 1.0),
            };
            for v in channel {
                *v = (*v * self.scale - shift) / divide;
            }
        }
    }
}

/// Resamples each channel through the inverse of: flip, zoom and rotate about the centre,
/// then shift. Pixels that come from outside the image are 0 (background).
fn warp(
    image: &mut [f32],
    [channels, height, width]: [usize; 3],
    angle: f32,
    zoom: f32,
    shift: (f32, f32),
    flip: bool,
) {
    let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let plane = width * height;
    let source = image.to_vec();
    for c in 0..channels {
        let src = &source[c * plane..(c + 1) * plane];
        let dst = &mut image[c * plane..(c + 1) * plane];
        for y in 0..height {
            for x in 0..width {
                // Undo the shift, then the rotation and zoom, then the flip.
                let (dx, dy) = (x as f32 - cx - shift.0, y as f32 - cy - shift.1);
                let mut sx = (cos * dx + sin * dy) / zoom + cx;
                let sy = (-sin * dx + cos * dy) / zoom + cy;
                if flip {
                    sx = width as f32 - 1.0 - sx;
                }
                dst[y * width + x] = bilinear(src, width, height, sx, sy);
            }
        }
    }
}

fn bilinear(plane: &[f32], width: usize, height: usize, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| {
        if xi < 0.0 || yi < 0.0 || xi >= width as f32 || yi >= height as f32 {
            0.0
        } else {
            plane[yi as usize * width + xi as usize]
        }
    };
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
    let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<f32> {
        (0..2 * 5 * 6).map(|i| (i * 4 % 256) as f32).collect()
    }

    #[test]
    fn scaling_and_normalisation() {
        let mut image = vec![255.0, 0.0, 51.0, 102.0];
        Transform::to_float().normalize(&[0.5], &[0.5]).apply(&mut image, [1, 2, 2], 0);
        let want = [1.0, -1.0, -0.6, -0.2];
        assert!(image.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{image:?}");
    }

    #[test]
    fn augmentation_is_reproducible_from_the_seed() {
        let t = Transform::default().rotation(15.0).zoom(0.1).shift(0.1).brightness(0.2).contrast(0.2);
        let (mut a, mut b, mut c) = (ramp(), ramp(), ramp());
        t.apply(&mut a, [2, 5, 6], 11);
        t.apply(&mut b, [2, 5, 6], 11);
        t.apply(&mut c, [2, 5, 6], 12);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (0.0..=255.0).contains(v)));
    }

    #[test]
    fn a_warp_without_motion_is_the_identity_and_a_flip_mirrors() {
        let mut same = ramp();
        warp(&mut same, [2, 5, 6], 0.0, 1.0, (0.0, 0.0), false);
        assert_eq!(same, ramp());
        let mut flipped = ramp();
        warp(&mut flipped, [2, 5, 6], 0.0, 1.0, (0.0, 0.0), true);
        let original = ramp();
        for row in 0..10 {
            let (f, o) = (&flipped[row * 6..row * 6 + 6], &original[row * 6..row * 6 + 6]);
            assert!(f.iter().eq(o.iter().rev()), "row {row}: {f:?} vs {o:?}");
        }
    }

    #[test]
    fn a_whole_pixel_shift_moves_the_image() {
        let mut image = ramp();
        warp(&mut image, [2, 5, 6], 0.0, 1.0, (1.0, 0.0), false);
        let original = ramp();
        for y in 0..5 {
            assert_eq!(image[y * 6], 0.0, "the uncovered column is background");
            assert_eq!(&image[y * 6 + 1..y * 6 + 6], &original[y * 6..y * 6 + 5]);
        }
    }

    #[test]
    fn whole_pixel_shifts_keep_pixels_exact_and_reach_every_offset() {
        let original = ramp();
        let shape = [2, 5, 6];
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut image = original.clone();
            Transform::default().shift_pixels(2).apply(&mut image, shape, seed);
            // Find the offset that explains the result: every pixel is either a copy of the
            // original's pixel at that offset or background where the source is outside.
            let offset = (-2..=2i64).flat_map(|dy| (-2..=2i64).map(move |dx| (dx, dy))).find(|&(dx, dy)| {
                (0..2 * 5 * 6).all(|i| {
                    let (c, y, x) = (i / 30, (i / 6 % 5) as i64, (i % 6) as i64);
                    let (sx, sy) = (x - dx, y - dy);
                    let want = if (0..6).contains(&sx) && (0..5).contains(&sy) {
                        original[c * 30 + sy as usize * 6 + sx as usize]
                    } else {
                        0.0
                    };
                    image[i] == want
                })
            });
            seen.insert(offset.unwrap_or_else(|| panic!("seed {seed}: not a whole-pixel shift: {image:?}")));
        }
        assert_eq!(seen.len(), 25, "every offset in -2..=2 × -2..=2 is drawn: {seen:?}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Transform::to_float().normalize(&[0.5, 0.5], &[0.5, 0.5]).check(1).is_err());
        assert!(Transform::to_float().normalize(&[0.5], &[0.0]).check(1).is_err());
        assert!(Transform::default().zoom(1.5).check(1).is_err());
        assert!(Transform::default().rotation(-3.0).check(1).is_err());
        assert!(Transform::to_float().rotation(10.0).check(3).is_ok());
    }
}
