"""Writes the first images of each tutorial dataset to a smaller copy in the same formats.

The hardware-GPU check (benches/gpu/run.sh) travels to its machine with at most 64 MiB, the
repository (with the bundled Sign Language MNIST) included, so MNIST, Fashion-MNIST and
CIFAR-10 go as slices: the first TRAIN training and TEST test images, gzipped, in the
layout KILN_DATA_DIR expects.

    python3 benches/gpu/slice_data.py SOURCE_ROOT DEST_ROOT [--train N] [--test N] [--cifar-train N]
"""

import argparse
import gzip
import struct
from pathlib import Path


def read(path):
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            data = candidate.read_bytes()
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    raise SystemExit(f"{path}: neither it nor {path.name}.gz exists")


def slice_idx(source, dest, count):
    """An IDX file's first `count` items, its count field rewritten."""
    data = read(source)
    (magic,) = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    if count > shape[0]:
        raise SystemExit(f"{source}: holds {shape[0]} items, {count} asked")
    item = 1
    for d in shape[1:]:
        item *= d
    header = data[:4] + struct.pack(f">{dims}I", count, *shape[1:])
    body = data[4 + 4 * dims:][:count * item]
    dest.with_name(dest.name + ".gz").write_bytes(gzip.compress(header + body, 9))


def slice_cifar(source, dest, count):
    """A CIFAR-10 binary batch's first `count` records (a label byte and 3072 pixels each)."""
    data = read(source)
    if count * 3073 > len(data):
        raise SystemExit(f"{source}: holds {len(data) // 3073} records, {count} asked")
    dest.with_name(dest.name + ".gz").write_bytes(gzip.compress(data[:count * 3073], 9))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--cifar-train", type=int, default=2500)
    args = parser.parse_args()
    for name in ("mnist", "fashion-mnist"):
        (args.dest / name).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", args.train), ("t10k", args.test)):
            for kind in ("images-idx3", "labels-idx1"):
                file = f"{split}-{kind}-ubyte"
                slice_idx(args.source / name / file, args.dest / name / file, count)
    (args.dest / "cifar-10").mkdir(parents=True, exist_ok=True)
    for file, count in (("data_batch_1.bin", args.cifar_train), ("test_batch.bin", args.test)):
        slice_cifar(args.source / "cifar-10" / file, args.dest / "cifar-10" / file, count)


if __name__ == "__main__":
    main()
