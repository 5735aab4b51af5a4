#!/usr/bin/env bash
# Prepares the hardware-GPU check on a machine without a GPU: builds the binaries that
# benches/gpu/run.sh runs there (the training and layers benches, the GPU test suites,
# xtask), and puts
# them, slices of the datasets and the Vulkan loader package into .gpu-check/ (ignored by
# git), to travel with the checkout to a machine that has a GPU and no network.
#
#     bash benches/gpu/prepare.sh            # KILN_DATA_DIR: the full datasets (default ../shared/data)
#
# The checkout plus .gpu-check/ must stay under 64 MiB, what the device tool carries; the
# script ends by printing that size, and fails when it is over.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
check=.gpu-check
data_source=${KILN_DATA_DIR:-$root/../shared/data}
rm -rf "$check"
mkdir -p "$check/bin" "$check/debs"

# The GPU test suites, as package.target ("lib": the package's unit tests): the kernels
# against the host (kiln-wgsl), every op's parity with the CPU, layers and fused ops, the
# PyTorch fixtures, training ops, gradients, models, the GPU data loader, steady-state buffer
# reuse, the tutorials. Targets of one name in two packages (layers) are told apart.
suites="kiln-wgsl.lib kiln-tensor.parity kiln-tensor.layers kiln-tensor.pytorch_fixture kiln-tensor.training_ops
kiln-tensor.classification kiln-autograd.gradients kiln-nn.layers kiln-nn.models kiln-data.loader
kiln.gpu_steady_state kiln.tutorials"

echo "== building (release)"
artifacts=$(mktemp)
cargo build --release --bench train --bench layers --message-format=json >"$artifacts"
cargo build --release -p xtask --message-format=json >>"$artifacts"
cargo test --release --workspace --no-run --message-format=json >>"$artifacts"
python3 - "$artifacts" "$check/bin" $suites <<'PY'
import json, shutil, sys
artifacts, dest, suites = sys.argv[1], sys.argv[2], set(sys.argv[3:])
found = {}
for line in open(artifacts):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    name, kind = m["target"]["name"], m["target"]["kind"]
    # The package's name: "path+file:///…/kiln-tensor#0.1.0" (the folder is the name here),
    # "…#kiln-tensor@0.1.0", or the older "kiln-tensor 0.1.0 (path+file:///…)".
    package_id = m["package_id"]
    if "#" in package_id:
        base, _, fragment = package_id.partition("#")
        package = fragment.split("@")[0] if "@" in fragment else base.rstrip("/").rsplit("/", 1)[-1]
    else:
        package = package_id.split(" ")[0]
    suite = f"{package}.{'lib' if kind == ['lib'] else name}"
    # `cargo test` also builds xtask's own unit tests as a "bin": not that one. Benches are
    # named <bench>-bench: the layers bench shares its name with test suites.
    if kind == ["bench"] and name in ("train", "layers"):
        found[f"{name}-bench"] = m["executable"]
    elif kind == ["bin"] and name == "xtask" and not m["profile"]["test"]:
        found[name] = m["executable"]
    elif m["profile"]["test"] and kind in (["test"], ["lib"]) and suite in suites:
        found[suite] = m["executable"]
missing = ({"train-bench", "layers-bench", "xtask"} | suites) - set(found)
if missing:
    sys.exit(f"not built: {sorted(missing)}")
for name, path in found.items():
    shutil.copy(path, f"{dest}/{name}")
PY
rm -f "$artifacts"
# run.sh runs the suites named here.
echo "$suites" >"$check/suites"
strip "$check"/bin/*
# One archive: the binaries share most of their code, which xz's large window finds.
tar -C "$check/bin" -cf - . | xz -9 -T1 >"$check/bin.tar.xz"
rm -rf "$check/bin"

echo "== dataset slices from $data_source"
python3 benches/gpu/slice_data.py "$data_source" "$check/data"

echo "== the Vulkan loader (the GPU machine's driver needs it; it has no network)"
lists=$(mktemp -d)
mkdir -p "$lists/partial"
apt_options=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
apt-get "${apt_options[@]}" update -qq
(cd "$check/debs" && apt-get "${apt_options[@]}" download libvulkan1 2>/dev/null)
rm -rf "$lists"

# Test binaries find their fixtures under the path they were built in.
echo "$root" >"$check/built_at"

travelling=$( (git ls-files -z --cached --others --exclude-standard; find "$check" -type f -print0) |
    xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "== ready: $check holds $(du -sh "$check" | cut -f1); the checkout with it: $((travelling / 1048576)) MiB"
if [ "$travelling" -gt $((64 * 1048576)) ]; then
    echo "over the 64 MiB the device tool carries" >&2
    exit 1
fi
