// workgroup_sum for devices with subgroups (see workgroup_sum_tree.wgsl for the contract):
// each subgroup adds its values with subgroupAdd, the subgroups' totals meet in workgroup
// memory, and every subgroup adds those in the same order — two barriers instead of the
// tree's nine. subgroup_id and num_subgroups say where each total goes, so nothing assumes
// how the device lays subgroups over the workgroup.

struct Invocation {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

// One total per subgroup; 256 slots hold subgroups of a single invocation.
var<workgroup> subgroup_totals: array<vec2<f32>, 256>;
var<workgroup> workgroup_total: vec2<f32>;

fn workgroup_sum(invocation: Invocation, value: vec2<f32>) -> vec2<f32> {
    let total = subgroupAdd(value);
    if (invocation.lane == 0u) {
        subgroup_totals[invocation.subgroup] = total;
    }
    workgroupBarrier();
    var totals = vec2(0.0);
    for (var s = invocation.lane; s < invocation.subgroups; s += invocation.lanes) {
        totals += subgroup_totals[s];
    }
    // Every subgroup computes the sum (subgroup operations stay in uniform control flow);
    // the first invocation's is the one handed out.
    let sum = subgroupAdd(totals);
    if (invocation.index == 0u) {
        workgroup_total = sum;
    }
    return workgroupUniformLoad(&workgroup_total);
}
