// workgroup_sum: the total of one value from each invocation of a 256-invocation workgroup,
// returned to every invocation (all must call it, in uniform control flow). The families
// that reduce in workgroups (batch norm, channel sums, the classification totals) call it,
// and the context prepends one of two definitions: this one, without subgroup operations —
// a tree in workgroup memory, eight barriers — where the device has no subgroups, and
// workgroup_sum_subgroup.wgsl where it has. Either adds in a fixed order: no atomics.

// Where an invocation sits in its workgroup; entry points take it as a parameter.
struct Invocation {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> sum_partials: array<vec2<f32>, 256>;

fn workgroup_sum(invocation: Invocation, value: vec2<f32>) -> vec2<f32> {
    let i = invocation.index;
    sum_partials[i] = value;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (i < stride) {
            sum_partials[i] += sum_partials[i + stride];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&sum_partials[0]);
}
