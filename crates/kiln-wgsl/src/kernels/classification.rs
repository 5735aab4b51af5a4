use crate::pipeline::{Access, KernelFamily, KernelSpec, Slot};
use crate::{GpuBuffer, GpuContext, Result};

pub(crate) static FAMILY: KernelFamily =
    KernelFamily { name: "classification", source: include_str!("classification.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
    grad_scale: f32,
    _pad: u32,
}

/// The Rust side of `Params`, for the check against its WGSL twin (kernels/mod.rs).
#[cfg(test)]
pub(crate) const PARAMS: super::test_support::Layout = params_layout!(Params: rows, classes, grad_scale);

impl Params {
    fn new(rows: usize, classes: usize) -> Self {
        Self { rows: rows as u32, classes: classes as u32, grad_scale: 1.0, _pad: 0 }
    }
}

/// An entry of the family with its four flags (the module declares all four, so every
/// pipeline of it sets them).
fn spec(entry: &'static str, slots: &'static [Slot], [weight, grad, mean, accumulate]: [bool; 4]) -> KernelSpec {
    KernelSpec::new(&FAMILY, entry, slots)
        .constant("HAS_WEIGHT", weight)
        .constant("WITH_GRAD", grad)
        .constant("MEAN", mean)
        .constant("ACCUMULATE", accumulate)
}

/// Per-row cross-entropy terms of `logits` `[rows, classes]` against i32 `labels`.
pub struct CrossEntropyRows {
    /// `w[y] · (logsumexp(x) − x[y])` per row (0 for a row with an invalid label).
    pub loss: GpuBuffer,
    /// `w[y]` per row: the mean reduction divides by their sum.
    pub weight: GpuBuffer,
    /// `w[y] · (softmax(x) − one_hot(y)) · grad_scale`, `[rows, classes]`, when asked for.
    pub grad: Option<GpuBuffer>,
}

/// The rows of a (class-weighted) cross-entropy; the gradient times `grad_scale`. Labels
/// outside [0, classes) are reported as a fault, which the next readback turns into an error.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_rows(
    ctx: &GpuContext,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    class_weight: Option<&GpuBuffer>,
    rows: usize,
    classes: usize,
    with_grad: bool,
    grad_scale: f32,
) -> Result<CrossEntropyRows> {
    super::check_indexable("cross_entropy_rows", rows * classes, 1)?;
    let loss = ctx.alloc(rows as u64 * 4)?;
    let weight = ctx.alloc(rows as u64 * 4)?;
    // Unused bindings still need a buffer: the logits stand in.
    let grad = ctx.alloc(if with_grad { (rows * classes) as u64 * 4 } else { 4 })?;
    let spec = spec(
        "cross_entropy_rows",
        &[
            Slot(1, Access::Read),
            Slot(2, Access::Read),
            Slot(3, Access::Read),
            Slot(4, Access::ReadWrite),
            Slot(5, Access::ReadWrite),
            Slot(6, Access::ReadWrite),
        ],
        [class_weight.is_some(), with_grad, false, false],
    )
    .reports_faults();
    let params = Params { grad_scale, ..Params::new(rows, classes) };
    let buffers = [logits, labels, class_weight.unwrap_or(logits), &loss, &weight, &grad];
    ctx.launch(&spec, bytemuck::bytes_of(&params), &buffers, ctx.linear_grid(rows, 256)?)?;
    Ok(CrossEntropyRows { loss, weight, grad: with_grad.then_some(grad) })
}

/// The loss from the rows' terms — their sum, divided by the sum of their weights when
/// `mean` — and that divisor's reciprocal (1 without `mean`): two one-element buffers.
pub fn cross_entropy_total(
    ctx: &GpuContext,
    terms: &CrossEntropyRows,
    rows: usize,
    mean: bool,
) -> Result<(GpuBuffer, GpuBuffer)> {
    let (loss, scale) = (ctx.alloc(4)?, ctx.alloc(4)?);
    let spec = spec(
        "cross_entropy_total",
        &[Slot(8, Access::Read), Slot(9, Access::Read), Slot(10, Access::ReadWrite), Slot(11, Access::ReadWrite)],
        [false, false, mean, false],
    );
    let params = Params::new(rows, 0);
    ctx.launch(&spec, bytemuck::bytes_of(&params), &[&terms.loss, &terms.weight, &loss, &scale], [1, 1, 1])?;
    Ok((loss, scale))
}

fn launch_count(
    ctx: &GpuContext,
    (logits, labels): (&GpuBuffer, &GpuBuffer),
    rows: usize,
    classes: usize,
    out: &GpuBuffer,
    accumulate: bool,
) -> Result<()> {
    super::check_indexable("count_correct", rows * classes, 1)?;
    let slots = &[Slot(1, Access::Read), Slot(2, Access::Read), Slot(7, Access::ReadWrite)];
    let spec = spec("count_correct", slots, [false, false, false, accumulate]);
    ctx.launch(&spec, bytemuck::bytes_of(&Params::new(rows, classes)), &[logits, labels, out], [1, 1, 1])
}

/// How many rows of `logits` have their first maximum at the label, as a one-element f32
/// buffer (exact up to 2²⁴ rows in all).
pub fn count_correct(
    ctx: &GpuContext,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    rows: usize,
    classes: usize,
) -> Result<GpuBuffer> {
    let out = ctx.alloc(4)?;
    launch_count(ctx, (logits, labels), rows, classes, &out, false)?;
    Ok(out)
}

/// [`count_correct`], added in place to the one-element `total`.
pub fn count_correct_into(
    ctx: &GpuContext,
    logits: &GpuBuffer,
    labels: &GpuBuffer,
    rows: usize,
    classes: usize,
    total: &GpuBuffer,
) -> Result<()> {
    launch_count(ctx, (logits, labels), rows, classes, total, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{context_or_skip, contexts_of_each_class};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// The totals over more rows than a workgroup has invocations, on every context
        /// (both ways of summing a workgroup); whole-number terms add up exactly in any order.
        #[test]
        fn totals_over_many_rows_match_the_host(rows in prop_oneof![1..40usize, 250..3000usize], seed in any::<u32>()) {
            for ctx in contexts_of_each_class("classification::totals_over_many_rows_match_the_host") {
                let classes = 3;
                let labels: Vec<i32> = (0..rows).map(|r| ((r as u32 ^ seed) % 3) as i32).collect();
                let logits: Vec<f32> = (0..rows * classes).map(|i| ((i as u32).wrapping_mul(seed | 1) >> 7 & 7) as f32).collect();
                let correct = (0..rows)
                    .filter(|&r| {
                        let row = &logits[r * classes..(r + 1) * classes];
                        let best = (1..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
                        best as i32 == labels[r]
                    })
                    .count();
                let (on_gpu, labels) = (ctx.upload(&logits).unwrap(), ctx.upload(&labels).unwrap());
                let count = count_correct(&ctx, &on_gpu, &labels, rows, classes).unwrap();
                prop_assert_eq!(ctx.read::<f32>(&count, 1).unwrap(), vec![correct as f32]);

                let terms: Vec<f32> = (0..rows).map(|r| ((r as u32 ^ seed) % 17) as f32).collect();
                let weights: Vec<f32> = (0..rows).map(|r| (1 + (r as u32 ^ seed) % 3) as f32).collect();
                let given = CrossEntropyRows { loss: ctx.upload(&terms).unwrap(), weight: ctx.upload(&weights).unwrap(), grad: None };
                let (sum, _) = cross_entropy_total(&ctx, &given, rows, false).unwrap();
                prop_assert_eq!(ctx.read::<f32>(&sum, 1).unwrap(), vec![terms.iter().sum::<f32>()]);
                // The weights' sum is exact; WGSL's division need not be correctly rounded.
                let (mean, scale) = cross_entropy_total(&ctx, &given, rows, true).unwrap();
                let weight: f32 = weights.iter().sum();
                let near = |got: f32, want: f32| (got - want).abs() <= 1e-6 * want.abs();
                let (got_scale, got_mean) = (ctx.read::<f32>(&scale, 1).unwrap()[0], ctx.read::<f32>(&mean, 1).unwrap()[0]);
                prop_assert!(near(got_scale, 1.0 / weight), "scale {} for Σw {}", got_scale, weight);
                prop_assert!(near(got_mean, terms.iter().sum::<f32>() / weight), "mean {}", got_mean);
            }
        }
    }

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
            1.0,
        )
        .unwrap();
        let lse0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let loss = ctx.read::<f32>(&rows.loss, 2).unwrap();
        assert!((loss[0] - 0.5 * (lse0 - 3.0)).abs() < 1e-6 && (loss[1] - 2.0 * 3f32.ln()).abs() < 1e-6, "{loss:?}");
        assert_eq!(ctx.read::<f32>(&rows.weight, 2).unwrap(), vec![0.5, 2.0]);
        let grad = ctx.read::<f32>(rows.grad.as_ref().unwrap(), 6).unwrap();
        assert!((grad[4] - 2.0 * (1.0 / 3.0 - 1.0)).abs() < 1e-6, "{grad:?}");

        let (loss, scale) = cross_entropy_total(&ctx, &rows, 2, true).unwrap();
        let want = (0.5 * (lse0 - 3.0) + 2.0 * 3f32.ln()) / 2.5;
        assert!((ctx.read::<f32>(&loss, 1).unwrap()[0] - want).abs() < 1e-6);
        assert_eq!(ctx.read::<f32>(&scale, 1).unwrap(), vec![1.0 / 2.5]);
        let (sum, one) = cross_entropy_total(&ctx, &rows, 2, false).unwrap();
        assert!((ctx.read::<f32>(&sum, 1).unwrap()[0] - want * 2.5).abs() < 1e-5);
        assert_eq!(ctx.read::<f32>(&one, 1).unwrap(), vec![1.0]);

        let (on_gpu, labels) = (ctx.upload(&logits).unwrap(), ctx.upload(&[2i32, 0]).unwrap());
        let count = count_correct(&ctx, &on_gpu, &labels, 2, 3).unwrap();
        assert_eq!(ctx.read::<f32>(&count, 1).unwrap(), vec![2.0], "ties go to the first class");
        count_correct_into(&ctx, &on_gpu, &labels, 2, 3, &count).unwrap();
        assert_eq!(ctx.read::<f32>(&count, 1).unwrap(), vec![4.0], "added to the running count");

        let bad = cross_entropy_rows(
            &ctx,
            &ctx.upload(&logits).unwrap(),
            &ctx.upload(&[0i32, 3]).unwrap(),
            None,
            2,
            3,
            false,
            1.0,
        )
        .unwrap();
        let err = ctx.read::<f32>(&bad.loss, 2).unwrap_err().to_string();
        assert!(err.contains("label 3 at row 1 is outside the classes [0, 3)"), "{err}");
        assert!(ctx.read::<f32>(&bad.loss, 2).is_ok(), "a fault is reported once");
    }
}
