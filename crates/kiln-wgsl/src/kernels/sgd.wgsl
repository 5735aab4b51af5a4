// SGD with momentum, dampening, Nesterov and weight decay, in place, as torch.optim.SGD.

struct Params {
    len: u32,
    first_step: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> momentum_buffer: array<f32>;

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid, 256u);
    if (i >= p.len) {
        return;
    }
    var g = grad[i];
    if (p.weight_decay != 0.0) {
        g += p.weight_decay * param[i];
    }
    if (p.momentum != 0.0) {
        var buf = g;
        if (p.first_step == 0u) {
            buf = p.momentum * momentum_buffer[i] + (1.0 - p.dampening) * g;
        }
        momentum_buffer[i] = buf;
        if (p.nesterov != 0u) {
            g += p.momentum * buf;
        } else {
            g = buf;
        }
    }
    param[i] -= p.lr * g;
}
