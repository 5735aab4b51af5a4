// Classification heads over logits [rows, classes] and i32 labels [rows].
//
// cross_entropy_rows: per row, log-softmax and the negative log-likelihood of the label,
//   weighted by the label's class weight, and (WITH_GRAD) the gradient of that row's term,
//   w[y] · (softmax − one-hot). The caller reduces the rows and scales the gradient, which
//   keeps the reduction deterministic. A label outside [0, classes) is reported as a fault
//   and its row contributes nothing.
// count_correct: how many rows' first maximum is the label, as one f32, by one workgroup.

override HAS_WEIGHT: bool;
override WITH_GRAD: bool;

struct Params {
    rows: u32,
    classes: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> class_weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;
@group(0) @binding(7) var<storage, read_write> correct: array<f32>;

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
            grad[base + c] = w * g;
        }
    }
}

var<workgroup> partial_counts: array<u32, 256>;

@compute @workgroup_size(256)
fn count_correct(@builtin(local_invocation_index) lid: u32) {
    var count = 0u;
    for (var row = lid; row < p.rows; row += 256u) {
        let base = row * p.classes;
        var best = 0u;
        for (var c = 1u; c < p.classes; c++) {
            if (logits[base + c] > logits[base + best]) {
                best = c;
            }
        }
        if (i32(best) == labels[row]) {
            count += 1u;
        }
    }
    partial_counts[lid] = count;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial_counts[lid] += partial_counts[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        correct[0] = f32(partial_counts[0]);
    }
}
