// Per-channel sums of a tensor viewed as [batch, channels, plane]: the bias gradient of a
// convolution (plane = OH·OW) or of a linear layer (plane = 1). One workgroup per channel
// sums strided partials and then those with workgroup_sum: a fixed order, no atomics.
//
// relu_backward_channel_sums first passes the gradient through the ReLU that followed the
// layer (zero where the ReLU's output is not positive), writes that masked gradient — what
// the layer's other gradients need — and sums it: ReLU's backward and the bias gradient in
// one launch.
//
// The *_serial entries give each channel one invocation that walks its values in order:
// for short channels (a linear layer's batch), where a workgroup of 256 would mostly idle.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;
@group(0) @binding(3) var<storage, read> relu_output: array<f32>;
@group(0) @binding(4) var<storage, read_write> masked: array<f32>;

const WG: u32 = 256u;

fn element(c: u32, i: u32) -> u32 {
    return (i / p.plane) * p.channels * p.plane + c * p.plane + i % p.plane;
}

fn store_total(c: u32, invocation: Invocation, partial: f32) {
    let total = workgroup_sum(invocation, vec2(partial, 0.0)).x;
    if (invocation.index == 0u) {
        sums[c] = total;
    }
}

@compute @workgroup_size(256)
fn channel_sums(@builtin(workgroup_id) wid: vec3<u32>, invocation: Invocation) {
    var sum = 0.0;
    for (var i = invocation.index; i < p.batch * p.plane; i += WG) {
        sum += grad[element(wid.x, i)];
    }
    store_total(wid.x, invocation, sum);
}

@compute @workgroup_size(256)
fn relu_backward_channel_sums(@builtin(workgroup_id) wid: vec3<u32>, invocation: Invocation) {
    var sum = 0.0;
    for (var i = invocation.index; i < p.batch * p.plane; i += WG) {
        let e = element(wid.x, i);
        let g = select(0.0, grad[e], relu_output[e] > 0.0);
        masked[e] = g;
        sum += g;
    }
    store_total(wid.x, invocation, sum);
}

@compute @workgroup_size(256)
fn channel_sums_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let c = flat_index(wid, nwg, lid, WG);
    if (c >= p.channels) {
        return;
    }
    var sum = 0.0;
    for (var i = 0u; i < p.batch * p.plane; i++) {
        sum += grad[element(c, i)];
    }
    sums[c] = sum;
}

@compute @workgroup_size(256)
fn relu_backward_channel_sums_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                     @builtin(local_invocation_index) lid: u32) {
    let c = flat_index(wid, nwg, lid, WG);
    if (c >= p.channels) {
        return;
    }
    var sum = 0.0;
    for (var i = 0u; i < p.batch * p.plane; i++) {
        let e = element(c, i);
        let g = select(0.0, grad[e], relu_output[e] > 0.0);
        masked[e] = g;
        sum += g;
    }
    sums[c] = sum;
}
