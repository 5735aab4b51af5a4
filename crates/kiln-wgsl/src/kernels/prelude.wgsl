// Prepended to every kernel family.

// A 1-D launch folded over a 2-D grid (one grid dimension stops at 65,535 workgroups):
// the flat invocation index.
fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, workgroup_size: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * workgroup_size + lid;
}

// Bad input a kernel finds on the device (a label out of range, say) is recorded here and
// turned into an error at the next readback: [code, row, value, bound]. The first fault wins.
// Codes match kiln_wgsl::fault_code.
@group(0) @binding(15) var<storage, read_write> fault: array<atomic<u32>, 4>;

const FAULT_LABEL_OUT_OF_RANGE: u32 = 1u;

fn report_fault(code: u32, row: u32, value: u32, bound: u32) {
    loop {
        let attempt = atomicCompareExchangeWeak(&fault[0], 0u, code);
        if (attempt.exchanged) {
            atomicStore(&fault[1], row);
            atomicStore(&fault[2], value);
            atomicStore(&fault[3], bound);
            return;
        }
        if (attempt.old_value != 0u) {
            return;
        }
    }
}
