//! TensorBoard logs: event files that `tensorboard --logdir DIR` shows, as PyTorch's
//! `SummaryWriter` writes them. Each file is a sequence of records (the TFRecord framing: a
//! length and the payload, each with a masked CRC-32C) holding `Event` protobufs: the file
//! version first, then scalar and image summaries by tag and step.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut writer = kiln::tensorboard::SummaryWriter::new("runs/tb".as_ref())?;
//! writer.add_scalar("loss/train", 0.42, 1)?;
//! writer.flush()?;
//! # Ok(())
//! # }
//! ```

#[allow(clippy::all, clippy::pedantic, deprecated, dead_code)]
mod proto;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use proto::{Event, SessionLog, Summary, event, session_log, summary};

use kiln_data::ImageDataset;

use crate::figures::{self, Figure};
use crate::training::{History, Predictions, Step};

/// Writes one run's events to a new file in a log directory.
pub struct SummaryWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl SummaryWriter {
    /// A new event file in `dir` (made if missing), named as TensorBoard looks for them
    /// (`events.out.tfevents.<seconds>.<host>.<pid>.<n>.kiln`, `n` counting the files this
    /// process opened), opened with the file version. TensorBoard reads a directory's files
    /// in the order of their names, so a later file's events come after an earlier one's.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        std::fs::create_dir_all(dir)?;
        let host =
            std::fs::read_to_string("/etc/hostname").map_or_else(|_| "localhost".into(), |h| h.trim().to_string());
        let (seconds, pid) = (now().floor(), std::process::id());
        let (file, path) = loop {
            let n = OPENED.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("events.out.tfevents.{seconds}.{host}.{pid}.{n:04}.kiln"));
            match File::create_new(&path) {
                Ok(file) => break (file, path),
                // Left by an earlier process with this pid in the same second.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let mut writer = Self { file: BufWriter::new(file), path };
        writer.write_event(0, event::What::FileVersion("brain.Event:2".into()))?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks a session starting at `step`. TensorBoard takes the first as the run's start
    /// and each later one as a restart: it drops the points at `step` and after that came
    /// before it (those a resumed run is about to write again).
    pub fn start_session(&mut self, step: u64) -> std::io::Result<()> {
        let start = SessionLog { status: session_log::SessionStatus::Start.into(), ..Default::default() };
        self.write_event(step, event::What::SessionLog(start))
    }

    /// A point of the scalar plot `tag` ("loss/train") at `step`.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: u64) -> std::io::Result<()> {
        self.add_summary(tag, summary::value::Value::SimpleValue(value), step)
    }

    /// A PNG image (`width`×`height`, `channels` 1 grey, 3 RGB or 4 RGBA) under `tag` at
    /// `step`.
    pub fn add_png(
        &mut self,
        tag: &str,
        png: Vec<u8>,
        [width, height]: [u32; 2],
        channels: u8,
        step: u64,
    ) -> std::io::Result<()> {
        let image = summary::Image {
            height: height as i32,
            width: width as i32,
            colorspace: channels.into(),
            encoded_image_string: png,
        };
        self.add_summary(tag, summary::value::Value::Image(image), step)
    }

    /// Writes what is buffered to the file, so TensorBoard (or a reader after a crash) sees it.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn add_summary(&mut self, tag: &str, value: summary::value::Value, step: u64) -> std::io::Result<()> {
        let value = summary::Value { tag: tag.into(), value: Some(value), ..Default::default() };
        self.write_event(step, event::What::Summary(Summary { value: vec![value] }))
    }

    fn write_event(&mut self, step: u64, what: event::What) -> std::io::Result<()> {
        let event = Event { wall_time: now(), step: step as i64, what: Some(what), ..Default::default() };
        write_record(&mut self.file, &event.encode_to_vec())
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One TFRecord: the payload's length (u64, little-endian) and its masked CRC, the payload
/// and its masked CRC.
fn write_record(out: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let length = (payload.len() as u64).to_le_bytes();
    out.write_all(&length)?;
    out.write_all(&masked_crc(&length).to_le_bytes())?;
    out.write_all(payload)?;
    out.write_all(&masked_crc(payload).to_le_bytes())
}

/// CRC-32C, rotated and offset as TFRecord stores it (so a CRC of data holding CRCs does
/// not degenerate).
fn masked_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// What a training run logs, under the tags asl-app and the examples share: the training
/// loss every few batches ("loss/train_step", at the run's batch count, from 1), then per epoch
/// (at its number from 1) the training and validation loss and accuracy ("loss/train",
/// "loss/valid", "accuracy/train", "accuracy/valid"), the learning rate it trained with
/// ("learning_rate") and the curves so far ("figures/curves"); at the end, predictions on
/// the validation images ("figures/predictions", "figures/confusion").
pub struct RunLog {
    writer: SummaryWriter,
    /// Batches between training-loss points.
    every: usize,
    /// Batches in an epoch, to count them across epochs.
    batches_per_epoch: usize,
    /// A write that failed inside the epoch, reported when the epoch ends.
    failed: Option<std::io::Error>,
}

impl RunLog {
    /// A log in `dir` with a training-loss point every `every` batches of the run, which has
    /// `batches_done` batches behind it (0 for a new run; a resumed run's count, and what it
    /// logged after that point before it stopped is dropped).
    pub fn new(dir: &Path, every: usize, batches_per_epoch: usize, batches_done: usize) -> std::io::Result<Self> {
        let mut writer = SummaryWriter::new(dir)?;
        writer.start_session(batches_done as u64 + 1)?;
        Ok(Self { writer, every: every.max(1), batches_per_epoch, failed: None })
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        self.writer.path()
    }

    /// After a batch of epoch `epoch` (from 0): the loss when a point is due (reading it
    /// waits for the device, so only then). It is called from a training loop's progress
    /// callback, so a failure is kept for [`RunLog::epoch`] to return.
    pub fn step(&mut self, epoch: usize, step: &Step) {
        let global = epoch * self.batches_per_epoch + step.batches;
        if self.failed.is_some() || !global.is_multiple_of(self.every) {
            return;
        }
        let written = step
            .loss
            .to_scalar()
            .map_err(std::io::Error::other)
            .and_then(|loss| self.writer.add_scalar("loss/train_step", loss, global as u64));
        self.failed = written.err();
    }

    /// After the epoch `history` ends with, trained at `lr`: its metrics and the curves,
    /// written out; or the failure of a step inside it.
    pub fn epoch(&mut self, history: &History, lr: f32) -> std::io::Result<()> {
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        let (Some(train), Some(valid)) = (history.train.last(), history.valid.last()) else {
            return Err(std::io::Error::other("RunLog::epoch: the history has no epoch"));
        };
        let step = history.epochs() as u64;
        for (tag, value) in [
            ("loss/train", train.loss),
            ("loss/valid", valid.loss),
            ("accuracy/train", train.accuracy),
            ("accuracy/valid", valid.accuracy),
            ("learning_rate", lr),
        ] {
            self.writer.add_scalar(tag, value, step)?;
        }
        self.figure("figures/curves", &figures::curves(history), step)
    }

    /// At the end of a run of `epochs`: the first validation images captioned with their
    /// predictions, and the confusion matrix.
    pub fn predictions(
        &mut self,
        dataset: &ImageDataset,
        predictions: &Predictions,
        epochs: usize,
    ) -> std::io::Result<()> {
        let matrix = predictions.confusion_matrix(dataset.num_classes()).map_err(std::io::Error::other)?;
        let step = epochs as u64;
        self.figure("figures/predictions", &figures::prediction_grid(dataset, &predictions.predicted), step)?;
        self.figure("figures/confusion", &figures::confusion(&matrix, dataset.class_names()), step)
    }

    /// A figure under `tag` at `step`, written out.
    pub fn figure(&mut self, tag: &str, figure: &Figure, step: u64) -> std::io::Result<()> {
        self.writer.add_png(tag, figure.png()?, figure.size(), 3, step)?;
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_checksums_are_tensorflows_masked_crc32c() {
        // As `tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c` gives them.
        assert_eq!(masked_crc(b"kiln"), 0xcecd_f4f7);
        assert_eq!(masked_crc(&4u64.to_le_bytes()), 0x0452_4542);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    #[test]
    fn a_record_is_its_length_the_payload_and_their_checksums() {
        let mut record = Vec::new();
        write_record(&mut record, b"kiln").unwrap();
        let mut expected = 4u64.to_le_bytes().to_vec();
        expected.extend(0x0452_4542u32.to_le_bytes());
        expected.extend(b"kiln");
        expected.extend(0xcecd_f4f7u32.to_le_bytes());
        assert_eq!(record, expected);
    }
}
