//! The figures a training run is judged by: loss and accuracy curves, a grid of test
//! images captioned with the predicted and true classes, and the confusion matrix. Each is
//! a [`Figure`] that is saved as a PNG (asl-app's run directory) or logged as an image
//! ([`crate::tensorboard::RunLog`]).
//!
//! The curves are drawn with plotters (axes with ticks, gridlines, a legend); the image grid
//! and the heat map are laid out on an RGB canvas. All text is in DejaVu Sans, bundled
//! (assets/fonts), so a figure looks the same on every machine, whatever fonts it has.

use std::path::Path;
use std::sync::Once;

use kiln_data::ImageDataset;
use plotters::prelude::*;
use plotters::style::{FontDesc, FontFamily, FontStyle, register_font};

use crate::metrics::ConfusionMatrix;
use crate::training::{EpochMetrics, History};

type Rgb = [u8; 3];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
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

    /// `text` with its top-left corner at (x, y), `size` pixels high, clipped at the edges.
    fn text(&mut self, x: i64, y: i64, text: &str, size: f64, color: Rgb) {
        let ink = RGBColor(color[0], color[1], color[2]);
        let style = TextStyle::from(sans_serif(size)).color(&ink);
        let mut backend = BitMapBackend::with_buffer(&mut self.pixels, (self.width as u32, self.height as u32));
        // Only out-of-range glyph pixels can fail, and those are skipped: text is clipped.
        let _ = backend.draw_text(text, &style, (x as i32, y as i32));
    }

    /// `text` centred horizontally on `x`.
    fn text_centred(&mut self, x: i64, y: i64, text: &str, size: f64, color: Rgb) {
        self.text(x - text_width(text, size) / 2, y, text, size, color);
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

/// DejaVu Sans, which every figure's text is set in.
const DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The bundled font at `size` pixels, registered with plotters (once) as its sans-serif.
fn sans_serif(size: f64) -> FontDesc<'static> {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS).is_err() {
            unreachable!("the bundled DejaVu Sans parses");
        }
    });
    FontDesc::new(FontFamily::SansSerif, size, FontStyle::Normal)
}

/// The width in pixels of `text` set at `size`.
fn text_width(text: &str, size: f64) -> i64 {
    sans_serif(size).box_size(text).map_or(0, |(width, _)| width as i64)
}

/// Type sizes in pixels: captions and labels, and the numbers inside heat-map cells.
const LARGE: f64 = 18.0;
const SMALL: f64 = 12.0;

/// One panel of curves against the epoch: `series` as lines with markers, on axes with
/// ticks and gridlines, a legend where `legend` puts it.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: [(&str, Rgb, Vec<f32>); 2],
    y_max: f32,
    legend: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let epochs = series[0].2.len().max(series[1].2.len()).max(1) as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, sans_serif(22.0))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(if epochs == 1 { 0..2 } else { 1..epochs }, 0f32..y_max)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.min(10) as usize)
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(sans_serif(14.0))
        .axis_desc_style(sans_serif(16.0))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (name, [r, g, b], values) in series {
        let color = RGBColor(r, g, b);
        let points = values.iter().enumerate().map(|(i, &v)| (i as i32 + 1, v));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(3)).point_size(4))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(sans_serif(15.0))
        .background_style(RGBColor(255, 255, 255).mix(0.85))
        .border_style(RGBColor(150, 150, 150))
        .draw()
}

/// Training and validation loss (left) and accuracy (right) per epoch.
pub fn curves(history: &History) -> Figure {
    let (width, height) = (1000u32, 430u32);
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    let column = |metrics: &[EpochMetrics], f: fn(&EpochMetrics) -> f32| metrics.iter().map(f).collect::<Vec<_>>();
    let (train_loss, valid_loss) = (column(&history.train, |m| m.loss), column(&history.valid, |m| m.loss));
    let loss_max = train_loss.iter().chain(&valid_loss).fold(0.0f32, |a, &b| a.max(b)).max(1e-3) * 1.05;
    let accuracy = [
        ("train", BLUE, column(&history.train, |m| m.accuracy)),
        ("valid", ORANGE, column(&history.valid, |m| m.accuracy)),
    ];
    let drawn = {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let (left, right) = root.split_horizontally(width / 2);
        let loss = [("train", BLUE, train_loss), ("valid", ORANGE, valid_loss)];
        panel(&left, "Loss", loss, loss_max, SeriesLabelPosition::UpperRight)
            .and_then(|()| panel(&right, "Accuracy", accuracy, 1.0, SeriesLabelPosition::LowerRight))
            .and_then(|()| root.present())
    };
    if let Err(e) = drawn {
        unreachable!("drawing into a buffer of its own size with the bundled font: {e}");
    }
    Figure { width, height, pixels }
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
    let widest = |size| captions.iter().map(|c| text_width(c, size)).max().unwrap_or(0) as usize;
    let size = if widest(LARGE) <= width * zoom + 10 { LARGE } else { SMALL };
    let (cell_w, cell_h) = ((width * zoom).max(widest(size)) + 20, height * zoom + 30);
    let rows = shown.div_ceil(columns).max(1);
    let mut canvas = Canvas::new(columns * cell_w + 10, rows * cell_h + 40);
    canvas.text(10, 10, "predicted/true", LARGE, BLACK);
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
        canvas.text(x0, y0 + (height * zoom) as i64 + 5, caption, size, color);
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
    let numbered = (0..classes).any(|c| text_width(&name(c), LARGE) > cell - 4);
    let head = |c: i64| if numbered { c.to_string() } else { name(c) };
    let row_label = |c: i64| if numbered { format!("{c} {}", name(c)) } else { name(c) };
    let left = (0..classes).map(|c| text_width(&row_label(c), LARGE) + 16).max().unwrap_or(0).max(70);
    let mut canvas = Canvas::new((left + classes * cell + 20) as usize, (top + classes * cell + 20) as usize);
    canvas.text(left, 8, "predicted", LARGE, BLACK);
    canvas.text(4, 8, "true", SMALL, BLACK);
    for t in 0..classes {
        let label = row_label(t);
        canvas.text(left - 8 - text_width(&label, LARGE), top + t * cell + cell / 2 - 9, &label, LARGE, BLACK);
        canvas.text_centred(left + t * cell + cell / 2, top - 24, &head(t), LARGE, BLACK);
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
                canvas.text_centred(x + cell / 2, y + cell / 2 - 6, &count.to_string(), SMALL, ink);
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
        let mut canvas = Canvas::new(40, 30);
        canvas.text(5, 5, "L", LARGE, BLACK);
        let dark = |canvas: &Canvas, x: usize, y: usize| canvas.pixels[(y * 40 + x) * 3] < 128;
        let inked: Vec<(usize, usize)> =
            (0..30).flat_map(|y| (0..40).map(move |x| (x, y))).filter(|&(x, y)| dark(&canvas, x, y)).collect();
        assert!(!inked.is_empty(), "the L is drawn");
        // Within the box the font gives it, at (5, 5).
        let (width, height) = sans_serif(LARGE).box_size("L").unwrap();
        // (The font's own layout box puts the cap height a pixel or two above the top asked.)
        let (width, height) = (width as usize, height as usize);
        assert!(inked.iter().all(|&(x, y)| (4..6 + width).contains(&x) && (1..6 + height).contains(&y)), "{inked:?}");
        // The stem: a dark column several pixels tall.
        assert!(inked.iter().filter(|&&(x, _)| x == inked[0].0).count() >= 8, "{inked:?}");
        canvas.text(35, 25, "WWW", LARGE, RED); // mostly off the canvas: no panic
        assert!(text_width("AB", LARGE) > text_width("A", LARGE) && text_width("A", LARGE) > 5);
    }

    #[test]
    fn curves_have_their_size_both_series_colours_and_text() {
        let epoch = |loss, accuracy| EpochMetrics { loss, accuracy, ..EpochMetrics::default() };
        let history = History {
            train: vec![epoch(1.0, 0.5), epoch(0.5, 0.8), epoch(0.3, 0.9)],
            valid: vec![epoch(1.1, 0.45), epoch(0.7, 0.7), epoch(0.6, 0.75)],
            ..History::default()
        };
        let figure = curves(&history);
        assert_eq!(figure.size(), [1000, 430]);
        let count = |color: Rgb| figure.pixels.chunks(3).filter(|p| *p == color).count();
        assert!(
            count(BLUE) > 300 && count(ORANGE) > 300,
            "both series in each panel: {} {}",
            count(BLUE),
            count(ORANGE)
        );
        assert!(count(BLACK) > 200, "axes, ticks and labels");
        // A single epoch still draws.
        let one = History { train: vec![epoch(1.0, 0.5)], valid: vec![epoch(1.0, 0.5)], ..History::default() };
        assert_eq!(curves(&one).size(), [1000, 430]);
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
        // "automobile/automobile" is too wide for large type under a 6-pixel image: small
        // type, which sets the cell's width.
        let caption = text_width("automobile/automobile", SMALL) as u32;
        assert!(text_width("automobile/automobile", LARGE) > 16);
        assert_eq!(figure.size()[0], 6 * (caption + 20) + 10);
        // Text is antialiased: the caption's colour blended with white.
        let figure = &figure;
        let caption = |x: usize| (44..60).map(move |y| pixel(figure, x, y));
        let cell = figure.size()[0] as usize / 6;
        let green = (10..cell).flat_map(caption).any(|[r, g, b]| g as i32 - r as i32 > 60 && g as i32 - b as i32 > 60);
        let red = (cell + 10..2 * cell)
            .flat_map(caption)
            .any(|[r, g, b]| r as i32 - g as i32 > 60 && r as i32 - b as i32 > 60);
        assert!(green && red, "the first caption right, the second wrong");
    }

    #[test]
    fn a_confusion_matrix_with_long_names_numbers_its_columns() {
        let matrix = ConfusionMatrix::from_predictions(2, &[0, 1, 1], &[0, 1, 0]).unwrap();
        let short = confusion(&matrix, &["A".into(), "B".into()]);
        assert_eq!(short.size(), [70 + 2 * 34 + 20, 70 + 2 * 34 + 20]);
        let long = confusion(&matrix, &["automobile".into(), "airplane".into()]);
        // Rows are labelled "0 automobile", the widest label setting the left margin.
        let left = text_width("0 automobile", LARGE) as u32 + 16;
        assert_eq!(long.size(), [left + 2 * 34 + 20, 70 + 2 * 34 + 20]);
        // The diagonal cell of class 0 (every sample right) is full blue.
        assert_eq!(pixel(&long, left as usize + 2, 70 + 2), [0, 0, 255]);
    }
}
