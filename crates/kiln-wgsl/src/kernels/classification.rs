use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

static FAMILY: KernelFamily = KernelFamily { name: "classification", source: include_str!("classification.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
}

/// Per-row cross-entropy terms of `logits` `[rows, classes]` against i32 `labels`.
pub struct CrossEntropyRows {
    /// `w[y] · (logsumexp(x) − x[y])` per row (0 for a row with an invalid label).
    pub loss: GpuBuffer,
    /// `w[y]` per row: the mean reduction divides by their sum.
    pub weight: GpuBuffer,
    /// `w[y] · (softmax(x) − one_hot(y))`, `[rows, classes]`, when asked for.
    pub grad: Option<GpuBuffer>,
}

/// The rows of a (class-weighted) cross-entropy. Labels outside [0, classes) are reported
/// as a fault, which the next readback turns into an error.
pub fn cross_entropy_rows(
    ctx: &GpuContext,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    class_weight: Option<&GpuBuffer>,
    rows: usize,
    classes: usize,
    with_grad: bool,
) -> Result<CrossEntropyRows> {
    super::check_indexable("cross_entropy_rows", rows * classes, 1)?;
    let loss = ctx.alloc(rows as u64 * 4)?;
    let weight = ctx.alloc(rows as u64 * 4)?;
    // Unused bindings still need a buffer: the logits stand in.
    let grad = ctx.alloc(if with_grad { (rows * classes) as u64 * 4 } else { 4 })?;
    let spec = KernelSpec::new(
        &FAMILY,
        "cross_entropy_rows",
        &[
            Slot(1, Access::Read),
            Slot(2, Access::Read),
            Slot(3, Access::Read),
            Slot(4, Access::ReadWrite),
            Slot(5, Access::ReadWrite),
            Slot(6, Access::ReadWrite),
        ],
    )
    .constant("HAS_WEIGHT", class_weight.is_some())
    .constant("WITH_GRAD", with_grad)
    .reports_faults();
    let params = Params { rows: rows as u32, classes: classes as u32 };
    let buffers = [logits, labels, class_weight.unwrap_or(logits), &loss, &weight, &grad];
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, ctx.linear_grid(rows, 256)?)?;
    Ok(CrossEntropyRows { loss, weight, grad: with_grad.then_some(grad) })
}

/// How many rows of `logits` have their first maximum at the label, as a one-element f32
/// buffer (exact up to 2²⁴ rows per call).
pub fn count_correct(
    ctx: &GpuContext,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    rows: usize,
    classes: usize,
) -> Result<GpuBuffer> {
    super::check_indexable("count_correct", rows * classes, 1)?;
    let out = ctx.alloc(4)?;
    let spec = KernelSpec::new(
        &FAMILY,
        "count_correct",
        &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(7, Access::ReadWrite)],
    )
    .constant("HAS_WEIGHT", false)
    .constant("WITH_GRAD", false);
    let params = Params { rows: rows as u32, classes: classes as u32 };
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[logits, labels, &out], [1, 1, 1])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::context_or_skip;

    #[test]
    fn rows_match_the_host_and_bad_labels_fault() {
        // A private context: a fault raised on the shared one could surface in another test.
        let Some(_) = context_or_skip("classification::rows_match_the_host_and_bad_labels_fault") else { return };
        let ctx = GpuContext::new(&crate::AdapterPreference::from_env()).unwrap();
        let logits = [1.0f32, 2.0, 3.0, 0.5, 0.5, 0.5];
        let weights = [1.0f32, 2.0, 0.5];
        let rows = cross_entropy_rows(
            &ctx,
            &ctx.upload(&logits).unwrap(),
            &ctx.upload(&[2i32, 1]).unwrap(),
            Some(&ctx.upload(&weights).unwrap()),
            2,
            3,
            true,
        )
        .unwrap();
        let lse0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let loss = ctx.read::<f32>(&rows.loss, 2).unwrap();
        assert!((loss[0] - 0.5 * (lse0 - 3.0)).abs() < 1e-6 && (loss[1] - 2.0 * 3f32.ln()).abs() < 1e-6, "{loss:?}");
        assert_eq!(ctx.read::<f32>(&rows.weight, 2).unwrap(), vec![0.5, 2.0]);
        let grad = ctx.read::<f32>(rows.grad.as_ref().unwrap(), 6).unwrap();
        assert!((grad[4] - 2.0 * (1.0 / 3.0 - 1.0)).abs() < 1e-6, "{grad:?}");

        let count = count_correct(&ctx, &ctx.upload(&logits).unwrap(), &ctx.upload(&[2i32, 0]).unwrap(), 2, 3).unwrap();
        assert_eq!(ctx.read::<f32>(&count, 1).unwrap(), vec![2.0], "ties go to the first class");

        let bad = cross_entropy_rows(
            &ctx,
            &ctx.upload(&logits).unwrap(),
            &ctx.upload(&[0i32, 3]).unwrap(),
            None,
            2,
            3,
            false,
        )
        .unwrap();
        let err = ctx.read::<f32>(&bad.loss, 2).unwrap_err().to_string();
        assert!(err.contains("label 3 at row 1 is outside the classes [0, 3)"), "{err}");
        assert!(ctx.read::<f32>(&bad.loss, 2).is_ok(), "a fault is reported once");
    }
}
