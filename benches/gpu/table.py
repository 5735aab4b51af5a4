"""The hardware-GPU check's table: Kiln on the GPU against PyTorch, per tutorial.

Reads the rows that benches/train.rs (--json) and benches/torch_train.py (--json) wrote,
and prints one Markdown table: samples/s of Kiln on the GPU, its dispatches per step,
PyTorch eager and compiled, and Kiln's ratio to each. A tutorial that one file has and
another lacks (Kiln skipped the GPU, a PyTorch run broke off) is an error, and so are files
with no rows at all: the check did not run.

    python3 benches/gpu/table.py KILN_JSON TORCH_JSON [TORCH_JSON ...]
"""

import json
import sys
from pathlib import Path

def rows(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{path}: {e}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    kiln = {r["tutorial"]: r for r in rows(sys.argv[1]) if r["device"].startswith("gpu")}
    torch_runs = []
    for path in sys.argv[2:]:
        by_tutorial = {r["tutorial"]: r for r in rows(path)}
        kind = next(iter(by_tutorial.values()), {})
        label = "compiled" if kind.get("compiled") else "eager"
        torch_runs.append((f"PyTorch {kind.get('device_kind', 'cpu')} {label}", by_tutorial))
    # Every tutorial any file has, in the order the benches ran them.
    tutorials = list(dict.fromkeys([*kiln, *(t for _, run in torch_runs for t in run)]))
    if not tutorials:
        sys.exit("no rows in any file: nothing ran")
    missing = [t for t in tutorials if t not in kiln] + [
        f"{t} ({name})" for name, run in torch_runs for t in tutorials if t not in run]
    adapters = sorted({r["device"] for r in kiln.values()})
    torch_devices = sorted({r["device"] for _, run in torch_runs for r in run.values()})
    print(f"Kiln: {', '.join(adapters) or 'no GPU row'}")
    for device in torch_devices:
        print(f"PyTorch: {device}")
    print()
    header = ["tutorial (batch)", "Kiln GPU, samples/s", "dispatches/step"]
    for name, _ in torch_runs:
        header += [f"{name}, samples/s", f"Kiln / {name}"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for tutorial in tutorials:
        k = kiln.get(tutorial)
        cells = [f"{tutorial} ({k['batch_size'] if k else '?'})"]
        cells.append(f"{k['samples_per_second']:,.0f}" if k else "missing")
        dispatches = (k or {}).get("per_step") or {}
        cells.append(f"{dispatches['dispatches']:.1f}" if "dispatches" in dispatches else "-")
        for _, run in torch_runs:
            t = run.get(tutorial)
            cells.append(f"{t['samples_per_second']:,.0f}" if t else "missing")
            cells.append(f"{k['samples_per_second'] / t['samples_per_second']:.2f}×" if k and t else "-")
        print("| " + " | ".join(cells) + " |")
    if missing:
        sys.exit(f"\nmissing rows: {', '.join(missing)}")


if __name__ == "__main__":
    main()
