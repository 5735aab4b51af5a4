//! Classification metrics beyond plain accuracy: the confusion matrix and, from it,
//! per-class precision, recall and F1 as scikit-learn's `classification_report` gives them.

use std::fmt::Write;

/// Counts of (true class, predicted class) pairs; rows are the truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

/// Why labels and predictions do not make a confusion matrix.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{labels} labels but {predictions} predictions")]
    LengthMismatch { labels: usize, predictions: usize },

    #[error("{what} {value} at position {position} is outside the {classes} classes")]
    ClassOutOfRange { what: &'static str, value: i32, position: usize, classes: usize },
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self { classes, counts: vec![0; classes * classes] }
    }

    /// The matrix of paired `labels` and `predictions` (equal lengths).
    pub fn from_predictions(classes: usize, labels: &[i32], predictions: &[i32]) -> Result<Self, MetricsError> {
        if labels.len() != predictions.len() {
            return Err(MetricsError::LengthMismatch { labels: labels.len(), predictions: predictions.len() });
        }
        let mut matrix = Self::new(classes);
        for (position, (&label, &predicted)) in labels.iter().zip(predictions).enumerate() {
            let check = |what, value: i32| {
                usize::try_from(value).ok().filter(|&v| v < classes).ok_or(MetricsError::ClassOutOfRange {
                    what,
                    value,
                    position,
                    classes,
                })
            };
            let (truth, guess) = (check("label", label)?, check("prediction", predicted)?);
            matrix.counts[truth * classes + guess] += 1;
        }
        Ok(matrix)
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// How often class `truth` was predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples whose true class is `class` (the row sum; scikit-learn's "support").
    pub fn support(&self, class: usize) -> u64 {
        (0..self.classes).map(|p| self.count(class, p)).sum()
    }

    /// Samples predicted as `class` (the column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        (0..self.classes).map(|t| self.count(t, class)).sum()
    }

    pub fn accuracy(&self) -> f64 {
        ratio((0..self.classes).map(|c| self.count(c, c)).sum(), self.total())
    }

    /// Of the samples predicted as `class`, the share that are; 0 when none were predicted.
    pub fn precision(&self, class: usize) -> f64 {
        ratio(self.count(class, class), self.predicted(class))
    }

    /// Of the samples of `class`, the share predicted so (the class's accuracy); 0 when
    /// there are none.
    pub fn recall(&self, class: usize) -> f64 {
        ratio(self.count(class, class), self.support(class))
    }

    /// The harmonic mean of precision and recall; 0 when both are.
    pub fn f1(&self, class: usize) -> f64 {
        let (p, r) = (self.precision(class), self.recall(class));
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }

    /// The unweighted mean of the classes' F1 scores.
    pub fn macro_f1(&self) -> f64 {
        (0..self.classes).map(|c| self.f1(c)).sum::<f64>() / self.classes.max(1) as f64
    }

    /// A table of precision, recall, F1 and support per class, then accuracy and macro F1.
    pub fn report(&self, names: &[String]) -> String {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let width = (0..self.classes).map(|c| name(c).len()).max().unwrap_or(0).max(8);
        let mut out = format!("{:>width$}  precision  recall      f1  support\n", "class");
        for c in 0..self.classes {
            let _ = writeln!(
                out,
                "{:>width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                name(c),
                self.precision(c),
                self.recall(c),
                self.f1(c),
                self.support(c)
            );
        }
        let _ = writeln!(out, "{:>width$}  {:>25.4}  {:>7}", "accuracy", self.accuracy(), self.total());
        let _ = writeln!(out, "{:>width$}  {:>25.4}  {:>7}", "macro f1", self.macro_f1(), self.total());
        out
    }

    /// The counts as CSV: a header of predicted class names, then one row per true class.
    pub fn to_csv(&self, names: &[String]) -> String {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let mut csv = String::from("true\\predicted");
        for c in 0..self.classes {
            let _ = write!(csv, ",{}", name(c));
        }
        csv.push('\n');
        for t in 0..self.classes {
            csv.push_str(&name(t));
            for p in 0..self.classes {
                let _ = write!(csv, ",{}", self.count(t, p));
            }
            csv.push('\n');
        }
        csv
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}
