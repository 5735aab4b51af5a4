// Prepended to every kernel family.

// A 1-D launch folded over a 2-D grid (one grid dimension stops at 65,535 workgroups):
// the flat invocation index.
fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, workgroup_size: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * workgroup_size + lid;
}
