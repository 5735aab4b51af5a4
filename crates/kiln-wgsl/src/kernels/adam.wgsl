// Adam and AdamW, in place, as torch.optim.Adam / AdamW (single-tensor form: the bias
// corrections fold into a step size and a square-root divisor computed on the host).

struct Params {
    len: u32,
    decoupled: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    // lr / (1 − β1ᵗ) and √(1 − β2ᵗ), from the host in double precision.
    step_size: f32,
    bias_correction2_sqrt: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    var g = grad[i];
    var w = param[i];
    if (p.weight_decay != 0.0) {
        if (p.decoupled != 0u) {
            w *= 1.0 - p.lr * p.weight_decay;
        } else {
            g += p.weight_decay * w;
        }
    }
    let m = exp_avg[i] + (1.0 - p.beta1) * (g - exp_avg[i]);
    let v = exp_avg_sq[i] * p.beta2 + (1.0 - p.beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let denom = sqrt(v) / p.bias_correction2_sqrt + p.eps;
    param[i] = w - p.step_size * (m / denom);
}
