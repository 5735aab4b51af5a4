// Batch normalisation over the channels of an NCHW tensor viewed as [batch, channels, plane]:
// training forward in two launches (statistics, then normalise), backward in two (per-channel
// sums, then the input gradient). Statistics and sums are reduced by one workgroup per
// channel in a fixed order — strided partials, then workgroup_sum — so results are
// deterministic without atomics.
//
// RELU: the forward output goes through a ReLU in the same pass, and the backward masks the
// incoming gradient by that output (zero where the output is zero), as ReLU's own backward.

override HAS_WEIGHT: bool;
override HAS_BIAS: bool;
override RELU: bool;
// The normalize entry reads the running variance (evaluation) instead of 1/√(var + eps).
override FROM_VARIANCE: bool;
// The backward runs through batch statistics (training) rather than fixed ones.
override TRAINING: bool;

struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
    len: u32,
    eps: f32,
    momentum: f32,
    // Values per channel, batch · plane, as f32.
    count: f32,
    // count / (count − 1): the biased variance to the unbiased one.
    unbias: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// batch_norm_stats
@group(0) @binding(2) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> invstd_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
// batch_norm_normalize and the backward
@group(0) @binding(6) var<storage, read> mean: array<f32>;
// 1/√(var + eps); the running variance with FROM_VARIANCE.
@group(0) @binding(7) var<storage, read> invstd: array<f32>;
@group(0) @binding(8) var<storage, read> weight: array<f32>;
@group(0) @binding(9) var<storage, read> bias: array<f32>;
@group(0) @binding(10) var<storage, read_write> out: array<f32>;
@group(0) @binding(11) var<storage, read> dy: array<f32>;
// The forward output, when RELU.
@group(0) @binding(12) var<storage, read> relu_output: array<f32>;
// batch_norm_backward_sums writes Σdy and Σdy·x̂ per channel; batch_norm_backward_input reads them.
@group(0) @binding(13) var<storage, read_write> sum_dy_out: array<f32>;
@group(0) @binding(14) var<storage, read_write> sum_dot_out: array<f32>;
@group(0) @binding(16) var<storage, read> sum_dy: array<f32>;
@group(0) @binding(17) var<storage, read> sum_dot: array<f32>;

const WG: u32 = 256u;

// The flat index of value `i` (of batch · plane) of channel `c`.
fn element(c: u32, i: u32) -> u32 {
    return (i / p.plane) * p.channels * p.plane + c * p.plane + i % p.plane;
}

fn gradient(i: u32) -> f32 {
    if (RELU) {
        return select(0.0, dy[i], relu_output[i] > 0.0);
    }
    return dy[i];
}

// One workgroup per channel: the batch mean and 1/√(biased variance + eps), and the running
// statistics moved toward the batch's (the variance unbiased), as PyTorch.
@compute @workgroup_size(256)
fn batch_norm_stats(@builtin(workgroup_id) wid: vec3<u32>, invocation: Invocation) {
    let c = wid.x;
    let lid = invocation.index;
    let n = p.batch * p.plane;
    var sum = 0.0;
    for (var i = lid; i < n; i += WG) {
        sum += x[element(c, i)];
    }
    let batch_mean = workgroup_sum(invocation, vec2(sum, 0.0)).x / p.count;
    // A second pass over squared deviations keeps the variance accurate when the mean is
    // large against the spread.
    var squares = 0.0;
    for (var i = lid; i < n; i += WG) {
        let d = x[element(c, i)] - batch_mean;
        squares += d * d;
    }
    let variance = workgroup_sum(invocation, vec2(squares, 0.0)).x / p.count;
    if (lid == 0u) {
        mean_out[c] = batch_mean;
        invstd_out[c] = 1.0 / sqrt(variance + p.eps);
        let m = p.momentum;
        running_mean[c] = running_mean[c] * (1.0 - m) + batch_mean * m;
        running_var[c] = running_var[c] * (1.0 - m) + (variance * p.unbias) * m;
    }
}

// Each invocation of the elementwise kernels (normalize, backward_input) takes RUN
// consecutive elements, mostly of one channel: it finds the channel once (two integer
// divisions, which llvmpipe makes lane by lane) and loads that channel's values once,
// again only where its run enters the next plane. RUN is 1 on hardware GPUs (see
// `run_length` in batch_norm.rs).
override RUN: u32;

// An invocation's run: [first, end) and where `first` lies, as (position in its plane,
// channel).
struct Run {
    first: u32,
    end: u32,
    at: u32,
    c: u32,
}

fn run_of(t: u32) -> Run {
    let first = t * RUN;
    let row = first / p.plane;
    return Run(first, min(first + RUN, p.len), first - row * p.plane, row % p.channels);
}

// Moves `run` on by one element: its position, and its channel where it enters the next
// plane. Returns whether the channel changed.
fn step(run: ptr<function, Run>) -> bool {
    (*run).at += 1u;
    if ((*run).at < p.plane) {
        return false;
    }
    (*run).at = 0u;
    (*run).c = select((*run).c + 1u, 0u, (*run).c + 1u == p.channels);
    return true;
}

// Channel c's normalisation as (mean, scale, shift): y = (x − mean)·scale + shift.
fn normalization(c: u32) -> vec3<f32> {
    var scale = invstd[c];
    if (FROM_VARIANCE) {
        scale = 1.0 / sqrt(invstd[c] + p.eps);
    }
    if (HAS_WEIGHT) {
        scale = scale * weight[c];
    }
    var shift = 0.0;
    if (HAS_BIAS) {
        shift = bias[c];
    }
    return vec3<f32>(mean[c], scale, shift);
}

// (x − mean)·(invstd·γ) + β per element, then the ReLU when RELU.
@compute @workgroup_size(256)
fn batch_norm_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    var run = run_of(flat_index(wid, nwg, lid, WG));
    if (run.first >= p.len) {
        return;
    }
    var k = normalization(run.c);
    if (run.at + RUN <= p.plane) {
        // The whole run in one plane, as most are: no position to track.
        for (var i = run.first; i < run.first + RUN; i++) {
            normalize_at(i, k);
        }
        return;
    }
    for (var i = run.first; i < run.end; i++) {
        normalize_at(i, k);
        if (step(&run)) {
            k = normalization(run.c);
        }
    }
}

fn normalize_at(i: u32, k: vec3<f32>) {
    var y = (x[i] - k.x) * k.y + k.z;
    if (RELU) {
        y = max(y, 0.0);
    }
    out[i] = y;
}

// One workgroup per channel: Σdy (the shift's gradient) and Σdy·x̂ (the scale's), with
// x̂ = (x − mean)·invstd.
@compute @workgroup_size(256)
fn batch_norm_backward_sums(@builtin(workgroup_id) wid: vec3<u32>, invocation: Invocation) {
    let c = wid.x;
    let lid = invocation.index;
    let n = p.batch * p.plane;
    var sum = 0.0;
    var dot = 0.0;
    for (var i = lid; i < n; i += WG) {
        let e = element(c, i);
        let g = gradient(e);
        sum += g;
        dot += g * (x[e] - mean[c]) * invstd[c];
    }
    let sums = workgroup_sum(invocation, vec2(sum, dot));
    if (lid == 0u) {
        sum_dy_out[c] = sums.x;
        sum_dot_out[c] = sums.y;
    }
}

// Channel c's terms of the input gradient: γ·invstd (or invstd), the mean, invstd, Σdy/m
// and Σ(dy·x̂)/m.
struct InputGradTerms {
    scale: f32,
    mean: f32,
    invstd: f32,
    mean_dy: f32,
    mean_dot: f32,
}

fn input_grad_terms(c: u32) -> InputGradTerms {
    var scale = invstd[c];
    if (HAS_WEIGHT) {
        scale = weight[c] * invstd[c];
    }
    if (TRAINING) {
        return InputGradTerms(scale, mean[c], invstd[c], sum_dy[c] / p.count, sum_dot[c] / p.count);
    }
    return InputGradTerms(scale, 0.0, 0.0, 0.0, 0.0);
}

// The input gradient: γ·invstd·(dy − Σdy/m − x̂·Σ(dy·x̂)/m) through batch statistics, or
// γ·invstd·dy through fixed ones.
@compute @workgroup_size(256)
fn batch_norm_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    var run = run_of(flat_index(wid, nwg, lid, WG));
    if (run.first >= p.len) {
        return;
    }
    var k = input_grad_terms(run.c);
    if (run.at + RUN <= p.plane) {
        for (var i = run.first; i < run.first + RUN; i++) {
            input_grad_at(i, k);
        }
        return;
    }
    for (var i = run.first; i < run.end; i++) {
        input_grad_at(i, k);
        if (step(&run)) {
            k = input_grad_terms(run.c);
        }
    }
}

fn input_grad_at(i: u32, k: InputGradTerms) {
    let g = gradient(i);
    if (TRAINING) {
        let normalized = (x[i] - k.mean) * k.invstd;
        out[i] = k.scale * (g - k.mean_dy - normalized * k.mean_dot);
    } else {
        out[i] = g * k.scale;
    }
}
