#!/usr/bin/env bash
# The hardware-GPU check, in one call on a machine with a GPU and no network, from what
# benches/gpu/prepare.sh put into .gpu-check/ on a machine without one:
#   1. the Vulkan loader (when the machine has none) and the adapter Kiln chooses;
#   2. the GPU test suites, with KILN_REQUIRE_GPU=1 (no adapter is a failure);
#   3. the training bench on the GPU for all six tutorials (dispatches per step included),
#      then each kernel's GPU time a step for the two CNNs (timestamp queries);
#   4. the tutorials' convolutions, forward and backward, by the tiled kernels Kiln routes
#      hardware GPUs to and by the column path they replaced (the layers bench);
#   5. PyTorch on CUDA on the same models, batch sizes and data, eager and torch.compile;
#   6. one table with the ratios (benches/gpu/table.py).
# Everything goes to $OUT (default /tmp/kiln-gpu-check): log.txt, the JSON rows, table.md,
# kernel_times.txt, convolutions.txt.
# Meant to end within 8 minutes on a hardware GPU; each stage has its own time limit.
#
#     bash benches/gpu/run.sh [--seconds S] [--torch-device cuda|cpu] [--no-compile] [--no-tests]
#
# --torch-device cpu rehearses everything but CUDA on a machine without one (lavapipe then
# is the adapter: set KILN_ADAPTER=software).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
check=$root/.gpu-check
out=${OUT:-/tmp/kiln-gpu-check}
seconds=5
torch_device=cuda
compile=1
tests=1
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift ;;
        --torch-device) torch_device=$2; shift ;;
        --no-compile) compile=0 ;;
        --no-tests) tests=0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
status=0
stage() { echo; echo "== $1 ($(date -u +%T))"; }
fail() { echo "FAILED: $1"; status=1; }
[ -f "$check/bin.tar.xz" ] || { echo "no $check/bin.tar.xz: run benches/gpu/prepare.sh first"; exit 1; }

stage "Vulkan loader and driver"
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    for deb in "$check"/debs/*.deb; do dpkg -x "$deb" /; done
    ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$nvidia_icd
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

bin=$(mktemp -d)
python3 -c '
import sys, tarfile
archive = tarfile.open(sys.argv[1])
# The "data" filter (Python 3.12+, backported to 3.8.17+) refuses links out of the folder.
archive.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
' "$check/bin.tar.xz" "$bin"
# The test binaries look for their fixtures under the path they were built in.
built_at=$(cat "$check/built_at")
if [ "$built_at" != "$root" ] && [ ! -e "$built_at" ]; then
    mkdir -p "$(dirname "$built_at")" && ln -s "$root" "$built_at"
fi
data=$(mktemp -d)
cp -r "$check"/data/* "$data"/
ln -s "$root/crates/asl-app/data" "$data/sign-language-mnist"
export KILN_DATA_DIR=$data KILN_REQUIRE_GPU=1

stage "adapter"
timeout 60 "$bin/xtask" adapter || fail "no adapter"

if [ "$tests" = 1 ]; then
    stage "GPU test suites"
    for suite in $(cat "$check/suites"); do
        filter=()
        # The tutorials suite also trains from full datasets; here only its GPU parity run.
        [ "$suite" = kiln.tutorials ] && filter=(gpu)
        if timeout 150 "$bin/$suite" "${filter[@]}" >"$bin/$suite.log" 2>&1; then
            echo "$suite: $(grep -E '^test result' "$bin/$suite.log" | tail -1)"
        else
            grep -E 'panicked|FAILED|failed|^test result' "$bin/$suite.log" | head -20
            fail "suite $suite"
        fi
    done
fi

stage "Kiln on the GPU, ${seconds} s a tutorial"
timeout 200 "$bin/train-bench" --device gpu --seconds "$seconds" --json "$out/kiln_gpu.json" || fail "Kiln's training bench"

stage "GPU time per kernel: the ASL and Fashion-MNIST CNNs, 3 s each"
# --profile prints the host's op table too; the kernels' table is what a GPU run adds.
timeout 90 "$bin/train-bench" --device gpu --seconds 3 --profile asl_cnn fashion_mnist_cnn >"$bin/kernel-times.log" 2>&1 ||
    fail "the kernel times"
awk '/^(asl_cnn|fashion_mnist_cnn) .*gpu:/ { print } /^GPU time/ { on = 1 } on { print } /^$/ { on = 0 }' \
    "$bin/kernel-times.log" | tee "$out/kernel_times.txt"

stage "convolutions: tiled kernels (gpu) against the column path (gpu columns)"
KILN_BENCH_DEVICE=gpu KILN_BENCH_QUICK=1 timeout 150 "$bin/layers-bench" --bench --noplot conv2d/gpu >"$bin/layers-bench.log" 2>&1 ||
    fail "the layers bench"
grep -E '^conv2d/|^ *time:' "$bin/layers-bench.log" | grep -v '%' | paste - - | sed 's/  */ /g' | tee "$out/convolutions.txt"

torch_jsons=()
for mode in eager compiled; do
    [ "$mode" = compiled ] && [ "$compile" = 0 ] && continue
    stage "PyTorch $torch_device $mode, ${seconds} s a tutorial"
    flags=(--device "$torch_device" --seconds "$seconds" --threads "$(nproc)" --json "$out/torch_${torch_device}_$mode.json")
    [ "$mode" = compiled ] && flags+=(--compile)
    if PYTHONUNBUFFERED=1 timeout 240 python3 benches/torch_train.py "${flags[@]}"; then
        torch_jsons+=("$out/torch_${torch_device}_$mode.json")
    else
        fail "PyTorch $mode"
    fi
done

stage "table"
python3 benches/gpu/table.py "$out/kiln_gpu.json" "${torch_jsons[@]}" | tee "$out/table.md" || fail "table"
echo
[ "$status" = 0 ] && echo "== all stages passed" || echo "== some stages FAILED (above)"
exit "$status"
