// Prepended to the software kernel families (conv_software.wgsl, matmul_software.wgsl):
// the register tile of 32 × vec4 results they accumulate, and its subgroup broadcasts.
//
// Each helper is called with a constant `first`, so after inlining every index into the
// tile is constant and it stays in registers: a variable index (a loop over the 32 rows)
// puts the whole array in memory, 3.7× slower (40 → 150 ms at the ASL CNN's conv2).

// tile[first + j] += (value j of the 8 that `v` holds across the subgroup's lanes) · x.
fn accumulate8(tile: ptr<function, array<vec4<f32>, 32>>, first: u32, v: f32, x: vec4<f32>) {
    (*tile)[first] += subgroupBroadcast(v, 0u) * x;
    (*tile)[first + 1u] += subgroupBroadcast(v, 1u) * x;
    (*tile)[first + 2u] += subgroupBroadcast(v, 2u) * x;
    (*tile)[first + 3u] += subgroupBroadcast(v, 3u) * x;
    (*tile)[first + 4u] += subgroupBroadcast(v, 4u) * x;
    (*tile)[first + 5u] += subgroupBroadcast(v, 5u) * x;
    (*tile)[first + 6u] += subgroupBroadcast(v, 6u) * x;
    (*tile)[first + 7u] += subgroupBroadcast(v, 7u) * x;
}

// total[first .. first + 8] += part[first .. first + 8].
fn add8(total: ptr<function, array<vec4<f32>, 32>>, part: ptr<function, array<vec4<f32>, 32>>, first: u32) {
    (*total)[first] += (*part)[first];
    (*total)[first + 1u] += (*part)[first + 1u];
    (*total)[first + 2u] += (*part)[first + 2u];
    (*total)[first + 3u] += (*part)[first + 3u];
    (*total)[first + 4u] += (*part)[first + 4u];
    (*total)[first + 5u] += (*part)[first + 5u];
    (*total)[first + 6u] += (*part)[first + 6u];
    (*total)[first + 7u] += (*part)[first + 7u];
}
