"""PyTorch's side of `cargo xtask bench --train --compare-torch` and of benches/gpu/run.sh.

Trains the same tutorial models as benches/train.rs (same layers, optimizer, learning rate,
batch size, shuffling and input scaling) on the same dataset files with PyTorch, on the CPU
with as many threads as Kiln uses or on a CUDA GPU (eager, or with --compile through
torch.compile), and times them the same way: a warm-up of at least 3 steps (up to 50, or
3 s; on CUDA up to 50 or 10 s, as compiling takes its first steps), then from the start of
an epoch until it ends or --seconds pass, ending with the loss on the host. On CUDA each
batch is copied to the GPU as the tutorials do, and the GPU is synchronised before every
clock read. Each tutorial runs in a process of its own, so its peak memory is its own.
Prints a table and writes the rows as JSON (--json).

    python3 benches/torch_train.py [TUTORIAL ...] [--seconds S] [--threads N] [--device cpu|cuda]
                                   [--compile] [--json PATH]

Datasets come from KILN_DATA_DIR (default ../shared/data beside the checkout).
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

TUTORIALS = ["asl_cnn", "asl_mlp", "fashion_mnist_cnn", "fashion_mnist_mlp", "mnist_mlp", "cifar10_lenet"]
BATCH = {"asl_cnn": 32, "asl_mlp": 32, "fashion_mnist_cnn": 256, "fashion_mnist_mlp": 64, "mnist_mlp": 32,
         "cifar10_lenet": 4}


def read_bytes(path):
    """A file's bytes, gunzipped when it is a .gz."""
    data = Path(path).read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def plain_or_gz(directory, name):
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory} holds neither {name} nor {name}.gz")


def sign_language_mnist(directory):
    """Kaggle's CSVs: label, then 784 pixels; labels 0..24 without 9, made contiguous."""
    text = read_bytes(plain_or_gz(directory, "sign_mnist_train.csv")).decode()
    body = text.split("\n", 1)[1].replace("\r", "").strip().replace("\n", ",")
    rows = np.fromstring(body, dtype=np.int64, sep=",").reshape(-1, 785)
    labels = rows[:, 0]
    return rows[:, 1:].astype(np.uint8).reshape(-1, 1, 28, 28), labels - (labels > 9)


def idx_images(directory, split="train"):
    """An IDX image/label file pair; split is "train" or "t10k" (the test set)."""
    images = read_bytes(plain_or_gz(directory, f"{split}-images-idx3-ubyte"))
    labels = read_bytes(plain_or_gz(directory, f"{split}-labels-idx1-ubyte"))
    return np.frombuffer(images, np.uint8, offset=16).reshape(-1, 1, 28, 28), np.frombuffer(labels, np.uint8, offset=8)


def cifar10(directory):
    images, labels = [], []
    for i in range(1, 6):
        for candidate in (directory / f"data_batch_{i}.bin", directory / f"data_batch_{i}.bin.gz"):
            if candidate.is_file():
                records = np.frombuffer(read_bytes(candidate), np.uint8).reshape(-1, 3073)
                labels.append(records[:, 0])
                images.append(records[:, 1:].reshape(-1, 3, 32, 32))
                break
    return np.concatenate(images), np.concatenate(labels)


def dataset(tutorial, root):
    if tutorial.startswith("asl"):
        images, labels = sign_language_mnist(root / "sign-language-mnist")
    elif tutorial.startswith("fashion"):
        images, labels = idx_images(root / "fashion-mnist")
    elif tutorial == "mnist_mlp":
        images, labels = idx_images(root / "mnist")
    else:
        images, labels = cifar10(root / "cifar-10")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if tutorial == "cifar10_lenet":
        x = (x - 0.5) / 0.5
    return torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


def model(tutorial):
    if tutorial == "asl_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 25, 3, padding=1), nn.BatchNorm2d(25), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(25, 50, 3, padding=1), nn.BatchNorm2d(50), nn.ReLU(), nn.Dropout(0.2), nn.MaxPool2d(2),
            nn.Conv2d(50, 75, 3, padding=1), nn.BatchNorm2d(75), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(675, 512), nn.Dropout(0.3), nn.ReLU(), nn.Linear(512, 24))
    if tutorial == "asl_mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 24))
    if tutorial == "fashion_mnist_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.3), nn.Flatten(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))
    if tutorial == "fashion_mnist_mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    if tutorial == "mnist_mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def optimizer(tutorial, parameters):
    if tutorial == "fashion_mnist_mlp":
        return torch.optim.SGD(parameters, lr=1e-3)
    if tutorial == "cifar10_lenet":
        return torch.optim.SGD(parameters, lr=1e-3, momentum=0.9)
    return torch.optim.Adam(parameters, lr=1e-3)


def peak_rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def clock(device):
    """Seconds from a monotonic clock, read once the GPU has finished what was queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def train(net, opt, batches, keep_going, device):
    """Trains on batches while keep_going(step) holds; returns (steps, samples, mean loss)."""
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    steps, samples, total = 0, 0, torch.zeros((), device=device)
    for step, (x, y) in enumerate(batches):
        if not keep_going(step):
            break
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        total += loss.detach() * len(y)
        steps, samples = steps + 1, samples + len(y)
    return steps, samples, (total / max(samples, 1)).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tutorials", nargs="*", default=TUTORIALS)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--compile", action="store_true", help="train through torch.compile")
    parser.add_argument("--json")
    parser.add_argument("--isolated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device cuda: torch {torch.__version__} sees no CUDA GPU")
    if not args.isolated:
        print(f"{'tutorial':<18} {'device':<34} {'batch':>6} {'steps/s':>9} {'samples/s':>10} {'peak RSS':>10}")
        rows = []
        with tempfile.TemporaryDirectory() as scratch:
            for tutorial in args.tutorials:
                out = Path(scratch) / "row.json"
                subprocess.run([sys.executable, __file__, tutorial, "--isolated", "--seconds", str(args.seconds),
                                "--threads", str(args.threads), "--device", args.device, "--json", str(out)]
                               + ["--compile"] * args.compile, check=True)
                rows += json.loads(out.read_text())
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(os.environ.get("KILN_DATA_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    rows = []
    for tutorial in args.tutorials:
        data = dataset(tutorial, root)
        # Compiled, a last partial batch would be a new shape, compiled again inside the timed run.
        loader = torch.utils.data.DataLoader(data, batch_size=BATCH[tutorial],
                                             shuffle=tutorial != "fashion_mnist_mlp", drop_last=args.compile)
        device = torch.device(args.device)
        net = model(tutorial).to(device)
        opt = optimizer(tutorial, net.parameters())
        trained = torch.compile(net) if args.compile else net
        warm_up, warm_up_seconds = clock(device), 10.0 if device.type == "cuda" else 3.0
        train(trained, opt, loader,
              lambda step: step < 3 or (step < 50 and clock(device) - warm_up < warm_up_seconds), device)
        started = clock(device)
        steps, samples, loss = train(trained, opt, loader, lambda step: clock(device) - started < args.seconds,
                                     device)
        seconds = clock(device) - started
        peak = peak_rss()
        if device.type == "cuda":
            mode = "compiled" if args.compile else "eager"
            device_name = f"cuda {mode}: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
        else:
            device_name = f"cpu ({args.threads} threads), torch {torch.__version__}"
        full = steps == len(loader)
        print(f"{tutorial:<18} {device_name[:34]:<34} {BATCH[tutorial]:>6} {steps / seconds:>9.1f} "
              f"{samples / seconds:>10.0f} {peak >> 20:>6} MiB{'' if full else '  (part of an epoch)'}")
        rows.append({"tutorial": tutorial, "framework": "pytorch", "device": device_name,
                     "device_kind": args.device, "compiled": args.compile, "batch_size": BATCH[tutorial],
                     "threads": args.threads, "steps": steps, "seconds": seconds,
                     "steps_per_second": steps / seconds, "samples_per_second": samples / seconds,
                     "full_epoch": full, "mean_loss": loss, "peak_rss_bytes": peak,
                     "peak_gpu_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
