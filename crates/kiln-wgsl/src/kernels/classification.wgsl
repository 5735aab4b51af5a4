// Classification heads over logits [rows, classes] and i32 labels [rows].
//
// cross_entropy_rows: per row, log-softmax and the negative log-likelihood of the label,
//   weighted by the label's class weight, and (WITH_GRAD) the gradient of that row's term,
//   w[y] · (softmax − one-hot), times grad_scale (the mean's 1/rows when that is known
//   before the pass: without class weights). A label outside [0, classes) is reported as a
//   fault and its row contributes nothing.
// cross_entropy_total: one workgroup sums the rows' terms and weights in a fixed order
//   (workgroup_sum) and writes the loss — Σ terms, over Σ w[y] for the mean (MEAN) — and
//   that scale, 1 / Σ w[y].
// count_correct: how many rows' first maximum is the label, as one f32, by one workgroup;
//   added to what the output holds when ACCUMULATE (a running count over an epoch).

override HAS_WEIGHT: bool;
override WITH_GRAD: bool;
override MEAN: bool;
override ACCUMULATE: bool;

struct Params {
    rows: u32,
    classes: u32,
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> class_weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;
@group(0) @binding(7) var<storage, read_write> correct: array<f32>;
@group(0) @binding(8) var<storage, read> rows_loss: array<f32>;
@group(0) @binding(9) var<storage, read> rows_weight: array<f32>;
@group(0) @binding(10) var<storage, read_write> total: array<f32>;
@group(0) @binding(11) var<storage, read_write> mean_scale: array<f32>;

@compute @workgroup_size(256)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = flat_index(wid, nwg, lid, 256u);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.classes;
    let label = labels[row];
    let valid = label >= 0 && u32(label) < p.classes;
    if (!valid) {
        report_fault(FAULT_LABEL_OUT_OF_RANGE, row, bitcast<u32>(label), p.classes);
    }
    var top = logits[base];
    for (var c = 1u; c < p.classes; c++) {
        top = max(top, logits[base + c]);
    }
    var total = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        total += exp(logits[base + c] - top);
    }
    let log_total = log(total) + top;
    var w = 0.0;
    if (valid) {
        w = 1.0;
        if (HAS_WEIGHT) {
            w = class_weight[u32(label)];
        }
        row_loss[row] = w * (log_total - logits[base + u32(label)]);
    } else {
        row_loss[row] = 0.0;
    }
    row_weight[row] = w;
    if (WITH_GRAD) {
        for (var c = 0u; c < p.classes; c++) {
            var g = exp(logits[base + c] - log_total);
            if (valid && c == u32(label)) {
                g -= 1.0;
            }
            grad[base + c] = (w * g) * p.grad_scale;
        }
    }
}

@compute @workgroup_size(256)
fn cross_entropy_total(invocation: Invocation) {
    var loss = 0.0;
    var weight = 0.0;
    for (var row = invocation.index; row < p.rows; row += 256u) {
        loss += rows_loss[row];
        weight += rows_weight[row];
    }
    let sums = workgroup_sum(invocation, vec2(loss, weight));
    if (invocation.index == 0u) {
        var scale = 1.0;
        if (MEAN) {
            scale = 1.0 / sums.y;
        }
        total[0] = sums.x * scale;
        mean_scale[0] = scale;
    }
}

// Counts are summed as f32: exact while a call has fewer than 2^24 rows.
@compute @workgroup_size(256)
fn count_correct(invocation: Invocation) {
    var count = 0.0;
    for (var row = invocation.index; row < p.rows; row += 256u) {
        let base = row * p.classes;
        var best = 0u;
        for (var c = 1u; c < p.classes; c++) {
            if (logits[base + c] > logits[base + best]) {
                best = c;
            }
        }
        if (i32(best) == labels[row]) {
            count += 1.0;
        }
    }
    let found = workgroup_sum(invocation, vec2(count, 0.0)).x;
    if (invocation.index == 0u) {
        var before = 0.0;
        if (ACCUMULATE) {
            before = correct[0];
        }
        correct[0] = before + found;
    }
}
