// Adam and AdamW, as torch.optim.Adam / AdamW: the update of one element. The entry point,
// its per-tensor bindings and its Params (shared hyperparameters, then per tensor its end in
// the launch, and the bias corrections folded into a step size and a square-root divisor
// computed on the host in double precision) are generated for a group of tensors: see
// optimizer.rs.

struct AdamState {
    w: f32,
    m: f32,
    v: f32,
}

fn adam_update(param: f32, grad: f32, exp_avg: f32, exp_avg_sq: f32, step_size: f32,
               bias_correction2_sqrt: f32) -> AdamState {
    var g = grad;
    var w = param;
    if (p.weight_decay != 0.0) {
        if (p.decoupled != 0u) {
            w *= 1.0 - p.lr * p.weight_decay;
        } else {
            g += p.weight_decay * w;
        }
    }
    let m = exp_avg + (1.0 - p.beta1) * (g - exp_avg);
    let v = exp_avg_sq * p.beta2 + (1.0 - p.beta2) * g * g;
    let denom = sqrt(v) / bias_correction2_sqrt + p.eps;
    return AdamState(w - step_size * (m / denom), m, v);
}
