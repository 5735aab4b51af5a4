//! The fused softmax cross-entropy and the correct-prediction count.

use kiln_wgsl::kernels::classification::{count_correct, count_correct_into, cross_entropy_rows, cross_entropy_total};

use crate::profile;
use crate::{DType, Device, Result, Tensor, TensorError};

/// How per-sample losses become one number, as PyTorch's `reduction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Σ w[yᵢ]·ℓᵢ / Σ w[yᵢ] (the plain mean when there are no class weights).
    #[default]
    Mean,
    /// Σ w[yᵢ]·ℓᵢ.
    Sum,
}

/// Checks logits `[rows, classes]` against labels `[rows]` (and class weights `[classes]`).
fn check_operands(
    logits: &Tensor,
    labels: &Tensor,
    weight: Option<&Tensor>,
    op: &'static str,
) -> Result<(usize, usize)> {
    logits.expect_dtype(op, DType::F32)?;
    labels.expect_dtype(op, DType::I32)?;
    logits.expect_same_device(op, labels)?;
    let mismatch = |why| TensorError::ShapeMismatch { op, lhs: logits.shape.clone(), rhs: labels.shape.clone(), why };
    let [rows, classes] = logits.shape[..] else { return Err(mismatch("logits must be [rows, classes]")) };
    if labels.shape != [rows] {
        return Err(mismatch("labels must be [rows], one per row of logits"));
    }
    if classes == 0 {
        return Err(TensorError::InvalidArgument { op, why: "logits have no classes".into() });
    }
    if let Some(w) = weight {
        w.expect_dtype(op, DType::F32)?;
        logits.expect_same_device(op, w)?;
        if w.shape != [classes] {
            return Err(TensorError::ShapeMismatch {
                op,
                lhs: logits.shape.clone(),
                rhs: w.shape.clone(),
                why: "class weights must be [classes]",
            });
        }
    }
    Ok((rows, classes))
}

impl Tensor {
    /// Cross-entropy of logits `[rows, classes]` against class indices `[rows]` (i32), with
    /// optional class weights, as `torch.nn.functional.cross_entropy`. Returns the loss, a
    /// rank-0 tensor on the logits' device.
    pub fn cross_entropy(&self, labels: &Tensor, weight: Option<&Tensor>, reduction: Reduction) -> Result<Tensor> {
        let _op = profile::enter("cross_entropy");
        Ok(self.cross_entropy_impl(labels, weight, reduction, false)?.0)
    }

    /// The loss and its gradient with respect to the logits, from one pass over them.
    pub fn cross_entropy_with_grad(
        &self,
        labels: &Tensor,
        weight: Option<&Tensor>,
        reduction: Reduction,
    ) -> Result<(Tensor, Tensor)> {
        let _op = profile::enter("cross_entropy_with_grad");
        let (loss, grad) = self.cross_entropy_impl(labels, weight, reduction, true)?;
        Ok((loss, grad.expect("asked for")))
    }

    fn cross_entropy_impl(
        &self,
        labels: &Tensor,
        weight: Option<&Tensor>,
        reduction: Reduction,
        with_grad: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        const OP: &str = "cross_entropy";
        let (rows, classes) = check_operands(self, labels, weight, OP)?;
        match &self.device() {
            Device::Cpu => {
                let labels = labels.host_i32(OP)?;
                if let Some((row, &label)) = labels.iter().enumerate().find(|&(_, &l)| l < 0 || l as usize >= classes) {
                    return Err(TensorError::InvalidArgument {
                        op: OP,
                        why: format!("label {label} at row {row} is outside the classes [0, {classes})"),
                    });
                }
                let weights = weight.map(Tensor::cpu_values);
                let (mut total, mut total_weight) = (0.0f32, 0.0f32);
                let mut grad = vec![0.0f32; if with_grad { rows * classes } else { 0 }];
                for (row, logits) in self.cpu_values().chunks(classes).enumerate() {
                    let label = labels[row] as usize;
                    let w = weights.map_or(1.0, |w| w[label]);
                    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let log_total = logits.iter().map(|&v| (v - top).exp()).sum::<f32>().ln() + top;
                    total += w * (log_total - logits[label]);
                    total_weight += w;
                    if with_grad {
                        for (c, (g, &v)) in grad[row * classes..].iter_mut().zip(logits).enumerate() {
                            *g = w * ((v - log_total).exp() - if c == label { 1.0 } else { 0.0 });
                        }
                    }
                }
                let scale = match reduction {
                    Reduction::Mean => 1.0 / total_weight,
                    Reduction::Sum => 1.0,
                };
                let grad = with_grad
                    .then(|| Tensor::cpu_f32(grad.into_iter().map(|g| g * scale).collect(), self.shape.clone()));
                Ok((Tensor::cpu_f32(vec![total * scale], vec![]), grad))
            }
            Device::Gpu(ctx) => {
                // Without class weights the mean's 1/Σw[y] is 1/rows, known now: the rows
                // kernel scales the gradient itself. (A bad label fails the pass anyway.)
                let mean = reduction == Reduction::Mean;
                let grad_scale = if mean && weight.is_none() { 1.0 / rows as f32 } else { 1.0 };
                let (logits, labels, class_weight) =
                    (self.gpu_buffer(), labels.gpu_buffer(), weight.map(Tensor::gpu_buffer));
                let terms =
                    cross_entropy_rows(ctx, logits, labels, class_weight, rows, classes, with_grad, grad_scale)?;
                let (loss, scale) = cross_entropy_total(ctx, &terms, rows, mean)?;
                let scalar = |buffer| Tensor::gpu(buffer, vec![], DType::F32);
                let grad = match terms.grad {
                    Some(buffer) => {
                        let grad = Tensor::gpu(buffer, self.shape.clone(), DType::F32);
                        Some(if mean && weight.is_some() { grad.mul(&scalar(scale))? } else { grad })
                    }
                    None => None,
                };
                Ok((scalar(loss), grad))
            }
        }
    }

    /// How many rows of these logits `[rows, classes]` predict their label (first maximum,
    /// as argmax), as a rank-0 f32 tensor that stays on the device: add it up over an epoch
    /// and read it once.
    pub fn count_correct(&self, labels: &Tensor) -> Result<Tensor> {
        let _op = profile::enter("count_correct");
        let (rows, classes) = check_operands(self, labels, None, "count_correct")?;
        match &self.device() {
            Device::Cpu => {
                let labels = labels.host_i32("count_correct")?;
                let hits = self
                    .cpu_values()
                    .chunks(classes)
                    .zip(labels)
                    .filter(|&(row, &label)| {
                        let best = row.iter().enumerate().fold(0, |best, (c, &v)| if v > row[best] { c } else { best });
                        best as i32 == label
                    })
                    .count();
                Ok(Tensor::cpu_f32(vec![hits as f32], vec![]))
            }
            Device::Gpu(ctx) => {
                let out = count_correct(ctx, self.gpu_buffer(), labels.gpu_buffer(), rows, classes)?;
                Ok(Tensor::gpu(out, vec![], DType::F32))
            }
        }
    }

    /// Adds [`Tensor::count_correct`] to `total` (a rank-0 f32 running count) in place: one
    /// launch on the GPU instead of a count and an addition.
    pub fn count_correct_into(&self, labels: &Tensor, total: &mut Tensor) -> Result<()> {
        let _op = profile::enter("count_correct_into");
        const OP: &str = "count_correct_into";
        total.expect_dtype(OP, DType::F32)?;
        self.expect_same_device(OP, total)?;
        if total.len() != 1 {
            return Err(TensorError::InvalidArgument {
                op: OP,
                why: format!("the running count must hold one value, got shape {:?}", total.shape),
            });
        }
        total.unshare()?;
        match &self.device() {
            Device::Gpu(ctx) => {
                let (rows, classes) = check_operands(self, labels, None, OP)?;
                Ok(count_correct_into(ctx, self.gpu_buffer(), labels.gpu_buffer(), rows, classes, total.gpu_buffer())?)
            }
            Device::Cpu => {
                let hits = self.count_correct(labels)?.cpu_values()[0];
                total.cpu_values_mut()[0] += hits;
                Ok(())
            }
        }
    }
}
