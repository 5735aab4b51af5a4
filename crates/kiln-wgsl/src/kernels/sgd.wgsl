// SGD with momentum, dampening, Nesterov and weight decay, as torch.optim.SGD: the update of
// one element. The entry point, its per-tensor bindings and its Params are generated for a
// group of tensors: see optimizer.rs.

struct SgdState {
    w: f32,
    momentum_buffer: f32,
}

fn sgd_update(param: f32, grad: f32, momentum_buffer: f32, first_step: bool) -> SgdState {
    var g = grad;
    if (p.weight_decay != 0.0) {
        g += p.weight_decay * param;
    }
    var buf = momentum_buffer;
    if (p.momentum != 0.0) {
        buf = g;
        if (!first_step) {
            buf = p.momentum * momentum_buffer + (1.0 - p.dampening) * g;
        }
        if (p.nesterov != 0u) {
            g += p.momentum * buf;
        } else {
            g = buf;
        }
    }
    return SgdState(param - p.lr * g, buf);
}
