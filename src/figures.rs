//! The figures a training run is judged by: loss and accuracy curves, a grid of test
//! images captioned with the predicted and true classes, and the confusion matrix. Each is
//! a [`Figure`] that is saved as a PNG (asl-app's run directory) or logged as an image
//! ([`crate::tensorboard::RunLog`]).
//!
//! They are drawn on a small RGB canvas with a built-in 5×7 pixel font rather than through
//! a plotting library: three fixed layouts do not justify a font-rendering dependency, and
//! the output must not depend on the fonts a machine happens to have.

use std::path::Path;

use kiln_data::ImageDataset;

use crate::metrics::ConfusionMatrix;
use crate::training::{EpochMetrics, History};

type Rgb = [u8; 3];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [200, 200, 200];
const BLUE: Rgb = [31, 119, 180];
const ORANGE: Rgb = [255, 127, 14];
const GREEN: Rgb = [0, 140, 0];
const RED: Rgb = [210, 0, 0];

/// An RGB image being drawn on.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self { width, height, pixels: vec![255; width * height * 3] }
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let at = (y as usize * self.width + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    fn fill(&mut self, x: i64, y: i64, width: i64, height: i64, color: Rgb) {
        for yy in y..y + height {
            for xx in x..x + width {
                self.set(xx, yy, color);
            }
        }
    }

    /// A line `thickness` pixels wide, stepped along its longer axis.
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), thickness: i64, color: Rgb) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            self.fill(x.round() as i64 - thickness / 2, y.round() as i64 - thickness / 2, thickness, thickness, color);
        }
    }

    /// `text` with its top-left corner at (x, y), each font pixel drawn `scale`×`scale`.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            let left = x + i as i64 * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.fill(left + col * scale, y + r as i64 * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    /// `text` centred horizontally on `x`.
    fn text_centred(&mut self, x: i64, y: i64, text: &str, scale: i64, color: Rgb) {
        self.text(x - text_width(text, scale) / 2, y, text, scale, color);
    }

    fn finish(self) -> Figure {
        Figure { width: self.width as u32, height: self.height as u32, pixels: self.pixels }
    }
}

/// A drawn figure: RGB pixels, row by row.
pub struct Figure {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Figure {
    /// [width, height] in pixels.
    pub fn size(&self) -> [u32; 2] {
        [self.width, self.height]
    }

    /// The figure encoded as a PNG file's bytes.
    pub fn png(&self) -> std::io::Result<Vec<u8>> {
        let mut png = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new(&mut png);
        image::ImageEncoder::write_image(
            encoder,
            &self.pixels,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(std::io::Error::other)?;
        Ok(png)
    }

    /// Writes the figure as a PNG at `path`, which is never left half-written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        kiln_nn::write_atomically(path, &self.png()?)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

fn text_width(text: &str, scale: i64) -> i64 {
    (text.chars().count() as i64 * 6 - 1).max(0) * scale
}

/// The 5×7 glyph of `c` (lower case drawn as upper case), one row per byte with the
/// leftmost pixel in bit 4; a question mark for characters the font lacks.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        '1' => [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        '2' => [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        '3' => [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
        '4' => [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        '5' => [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        '6' => [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        '7' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        '8' => [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        '9' => [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        'A' => [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'B' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
        'C' => [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
        'D' => [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100],
        'E' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        'F' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
        'G' => [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
        'H' => [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'I' => [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        'J' => [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
        'K' => [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
        'L' => [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        'M' => [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
        'N' => [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
        'O' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'P' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
        'Q' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
        'R' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        'S' => [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        'T' => [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
        'U' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'V' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        'W' => [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
        'X' => [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
        'Y' => [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100],
        'Z' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        '-' => [0, 0, 0, 0b11111, 0, 0, 0],
        ':' => [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0],
        '/' => [0b00001, 0b00010, 0b00010, 0b00100, 0b01000, 0b01000, 0b10000],
        '(' => [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010],
        ')' => [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000],
        '%' => [0b11001, 0b11010, 0b00010, 0b00100, 0b01000, 0b01011, 0b10011],
        '=' => [0, 0, 0b11111, 0, 0b11111, 0, 0],
        _ => [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0, 0b00100],
    }
}

/// One panel of curves against the epoch: axes, three labelled y ticks, the first and last
/// epoch, a title and, between the title and the plot where no curve can hide it, a legend.
fn panel(canvas: &mut Canvas, left: i64, title: &str, series: [(&str, Rgb, Vec<f32>); 2], y_max: f32) {
    let (top, width, height) = (60, 400, 300);
    canvas.text_centred(left + width / 2, 15, title, 2, BLACK);
    canvas.line((left as f64, top as f64), (left as f64, (top + height) as f64), 2, BLACK);
    canvas.line((left as f64, (top + height) as f64), ((left + width) as f64, (top + height) as f64), 2, BLACK);
    for i in 0..=2 {
        let value = y_max * i as f32 / 2.0;
        let y = top + height - height * i / 2;
        canvas.line(((left + 1) as f64, y as f64), ((left + width) as f64, y as f64), 1, GREY);
        let label = format!("{value:.2}");
        canvas.text(left - 8 - text_width(&label, 2), y - 7, &label, 2, BLACK);
    }
    let epochs = series[0].2.len().max(1);
    let x_of =
        |epoch: usize| left as f64 + if epochs == 1 { 0.5 } else { epoch as f64 / (epochs - 1) as f64 } * width as f64;
    let y_of = |v: f32| (top + height) as f64 - (v / y_max).clamp(0.0, 1.0) as f64 * height as f64;
    canvas.text_centred(x_of(0) as i64, top + height + 10, "1", 2, BLACK);
    canvas.text_centred(x_of(epochs - 1) as i64, top + height + 10, &epochs.to_string(), 2, BLACK);
    canvas.text_centred(left + width / 2, top + height + 30, "EPOCH", 2, BLACK);
    for (row, (name, color, values)) in series.iter().enumerate() {
        for (i, pair) in values.windows(2).enumerate() {
            canvas.line((x_of(i), y_of(pair[0])), (x_of(i + 1), y_of(pair[1])), 3, *color);
        }
        for (i, &v) in values.iter().enumerate() {
            canvas.fill(x_of(i) as i64 - 3, y_of(v) as i64 - 3, 7, 7, *color);
        }
        let legend_x = left + width / 2 - 110 + row as i64 * 120;
        canvas.fill(legend_x, top - 22, 20, 6, *color);
        canvas.text(legend_x + 28, top - 26, name, 2, BLACK);
    }
}

/// Training and validation loss (left) and accuracy (right) per epoch.
pub fn curves(history: &History) -> Figure {
    let mut canvas = Canvas::new(1000, 430);
    let column = |metrics: &[EpochMetrics], f: fn(&EpochMetrics) -> f32| metrics.iter().map(f).collect::<Vec<_>>();
    let (train_loss, valid_loss) = (column(&history.train, |m| m.loss), column(&history.valid, |m| m.loss));
    let loss_max = train_loss.iter().chain(&valid_loss).fold(0.0f32, |a, &b| a.max(b)).max(1e-3) * 1.05;
    let loss = [("TRAIN", BLUE, train_loss), ("VALID", ORANGE, valid_loss)];
    panel(&mut canvas, 80, "LOSS", loss, loss_max);
    let accuracy = [
        ("TRAIN", BLUE, column(&history.train, |m| m.accuracy)),
        ("VALID", ORANGE, column(&history.valid, |m| m.accuracy)),
    ];
    panel(&mut canvas, 580, "ACCURACY", accuracy, 1.0);
    canvas.finish()
}

/// The first images of `dataset` (up to 6×6), each captioned "predicted/true": green when
/// they agree, red when not. Colour images (three channels) are drawn in colour, others
/// by their first channel; captions too long for large type get small type.
pub fn prediction_grid(dataset: &ImageDataset, predicted: &[i32]) -> Figure {
    let [channels, height, width] = dataset.shape();
    let (columns, zoom) = (6usize, 3usize);
    let shown = dataset.len().min(predicted.len()).min(columns * columns);
    let names = dataset.class_names();
    let name = |c: i32| names.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
    let captions: Vec<String> =
        (0..shown).map(|i| format!("{}/{}", name(predicted[i]), name(dataset.label(i)))).collect();
    let widest = |scale| captions.iter().map(|c| text_width(c, scale)).max().unwrap_or(0) as usize;
    let scale = if widest(2) <= width * zoom + 10 { 2 } else { 1 };
    let (cell_w, cell_h) = ((width * zoom).max(widest(scale)) + 20, height * zoom + 30);
    let rows = shown.div_ceil(columns).max(1);
    let mut canvas = Canvas::new(columns * cell_w + 10, rows * cell_h + 40);
    canvas.text(10, 10, "PREDICTED/TRUE", 2, BLACK);
    let plane = height * width;
    for (i, caption) in captions.iter().enumerate() {
        let (x0, y0) = ((i % columns * cell_w + 10) as i64, (i / columns * cell_h + 40) as i64);
        let image = dataset.image(i);
        for y in 0..height * zoom {
            for x in 0..width * zoom {
                let at = (y / zoom) * width + x / zoom;
                let color = match channels {
                    3 => [image[at], image[plane + at], image[2 * plane + at]],
                    _ => [image[at]; 3],
                };
                canvas.set(x0 + x as i64, y0 + y as i64, color);
            }
        }
        let color = if predicted[i] == dataset.label(i) { GREEN } else { RED };
        canvas.text(x0, y0 + (height * zoom) as i64 + 6, caption, scale, color);
    }
    canvas.finish()
}

/// The confusion matrix as a heat map: each row (a true class) shaded by the share of its
/// samples predicted as each class, with the counts written in the cells. Names too wide
/// for a column head the columns by class number, and the rows by number and name.
pub fn confusion(matrix: &ConfusionMatrix, names: &[String]) -> Figure {
    let classes = matrix.classes() as i64;
    let (cell, top) = (34i64, 70i64);
    let name = |c: i64| names.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
    let numbered = (0..classes).any(|c| text_width(&name(c), 2) > cell - 4);
    let head = |c: i64| if numbered { c.to_string() } else { name(c) };
    let row_label = |c: i64| if numbered { format!("{c} {}", name(c)) } else { name(c) };
    let left = (0..classes).map(|c| text_width(&row_label(c), 2) + 16).max().unwrap_or(0).max(70);
    let mut canvas = Canvas::new((left + classes * cell + 20) as usize, (top + classes * cell + 20) as usize);
    canvas.text(left, 8, "PREDICTED", 2, BLACK);
    canvas.text(4, 8, "TRUE", 1, BLACK);
    for t in 0..classes {
        let label = row_label(t);
        canvas.text(left - 8 - text_width(&label, 2), top + t * cell + cell / 2 - 7, &label, 2, BLACK);
        canvas.text_centred(left + t * cell + cell / 2, top - 22, &head(t), 2, BLACK);
        let support = matrix.support(t as usize).max(1) as f64;
        for p in 0..classes {
            let count = matrix.count(t as usize, p as usize);
            let share = count as f64 / support;
            let shade = (255.0 * (1.0 - share)).round() as u8;
            let color = if t == p { [shade, shade, 255] } else { [255, shade, shade] };
            let (x, y) = (left + p * cell, top + t * cell);
            canvas.fill(x, y, cell - 1, cell - 1, color);
            if count > 0 {
                let ink = if share > 0.5 { WHITE } else { BLACK };
                canvas.text_centred(x + cell / 2, y + cell / 2 - 4, &count.to_string(), 1, ink);
            }
        }
    }
    canvas.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_where_asked_and_clipped_at_the_edges() {
        let mut canvas = Canvas::new(20, 10);
        canvas.text(1, 1, "L", 1, BLACK);
        let black = |x: usize, y: usize| canvas.pixels[(y * 20 + x) * 3] == 0;
        assert!((1..8).all(|y| black(1, y)), "the L's stem");
        assert!((1..6).all(|x| black(x, 7)), "the L's foot");
        assert!(!black(2, 1) && !black(0, 0));
        canvas.text(18, 8, "WW", 3, RED); // mostly off the canvas: no panic
        assert_eq!(text_width("AB", 2), 22);
    }

    #[test]
    fn a_figure_encodes_as_the_png_of_its_pixels() {
        let mut canvas = Canvas::new(7, 3);
        canvas.set(6, 2, RED);
        let figure = canvas.finish();
        assert_eq!(figure.size(), [7, 3]);
        let decoded = image::load_from_memory(&figure.png().unwrap()).unwrap().to_rgb8();
        assert_eq!((decoded.width(), decoded.height()), (7, 3));
        assert_eq!(decoded.into_raw(), figure.pixels);
    }

    /// The pixel of `figure` at (x, y).
    fn pixel(figure: &Figure, x: usize, y: usize) -> Rgb {
        let at = (y * figure.width as usize + x) * 3;
        figure.pixels[at..at + 3].try_into().unwrap()
    }

    #[test]
    fn colour_images_are_drawn_in_colour_and_long_captions_in_small_type() {
        // Two 2×2 images, every pixel (10, 20, 30) in CHW order; class names as CIFAR-10's.
        let image = [[10u8; 4], [20; 4], [30; 4]].concat();
        let names: Vec<String> = ["automobile", "airplane"].map(String::from).into();
        let dataset = ImageDataset::new([image.clone(), image].concat(), vec![0, 1], [3, 2, 2], names).unwrap();
        let figure = prediction_grid(&dataset, &[0, 0]);
        // The first image's top-left pixel sits at (10, 40), zoomed 3×.
        assert_eq!(pixel(&figure, 10, 40), [10, 20, 30]);
        assert_eq!(pixel(&figure, 15, 45), [10, 20, 30]);
        // "automobile/automobile" is 21 characters: 125 pixels in small type, which sets the cell.
        assert_eq!(figure.size()[0], 6 * (125 + 20) + 10);
        let green = (0..figure.width as usize).any(|x| (46..56).any(|y| pixel(&figure, x, y) == GREEN));
        let red = (0..figure.width as usize).any(|x| (46..56).any(|y| pixel(&figure, x, y) == RED));
        assert!(green && red, "the first caption right, the second wrong");
    }

    #[test]
    fn a_confusion_matrix_with_long_names_numbers_its_columns() {
        let matrix = ConfusionMatrix::from_predictions(2, &[0, 1, 1], &[0, 1, 0]).unwrap();
        let short = confusion(&matrix, &["A".into(), "B".into()]);
        assert_eq!(short.size(), [70 + 2 * 34 + 20, 70 + 2 * 34 + 20]);
        let long = confusion(&matrix, &["automobile".into(), "airplane".into()]);
        // Rows are labelled "0 automobile": 12 characters at 12 pixels each, less one gap.
        assert_eq!(long.size(), [(12 * 12 - 2 + 16) + 2 * 34 + 20, 70 + 2 * 34 + 20]);
        // The diagonal cell of class 0 (every sample right) is full blue.
        assert_eq!(pixel(&long, 158 + 2, 70 + 2), [0, 0, 255]);
    }

    #[test]
    fn every_glyph_the_figures_use_exists() {
        let unknown = glyph('\u{7}');
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ .-:/()%=".chars() {
            assert_ne!(glyph(c), unknown, "{c:?} has no glyph");
        }
        assert_eq!(glyph('a'), glyph('A'));
    }
}
