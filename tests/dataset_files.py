"""Writes the tutorials' dataset files as their frameworks leave them on disk, from the
shared data, for tests/dataset_files.rs to read with Kiln and compare with the originals.

usage: dataset_files.py DATA_ROOT OUT_DIR [--small]

OUT_DIR/
  py2/cifar-10-batches-py/{data_batch_1,test_batch}   as Python 2's cPickle wrote the
      official batches: protocol 2, `str` (byte-string) keys, the array's data as a str;
      made by a Pickler that writes bytes the way Python 2 wrote str (SHORT_BINSTRING,
      BINSTRING), and checked here to load as torchvision loads them (encoding="latin1")
  py3-protocol-N/cifar-10-batches-py/{...} for N = 0..5: the dicts Python 3 loads with
      encoding="bytes", pickled again by Python 3 and NumPy in protocol N
  keras/mnist.npz             np.savez (stored), as Keras's own file
  keras-deflated/mnist.npz    np.savez_compressed (deflated)
  kaggle/fashion-mnist_{train,test}.csv   Kaggle's header and rows

--small writes only the Python 2 training batch, of 3 images (the fixture committed as
crates/kiln-data/tests/fixtures/cifar-10-batches-py/data_batch_1).
"""

import gzip
import io
import os
import pickle
import sys

import numpy as np


class Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: a byte string is a `str`, SHORT_BINSTRING or BINSTRING."""

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def cifar_binary(path, keep):
    records = np.frombuffer(gzip.open(path).read(), dtype=np.uint8).reshape(-1, 3073)[:keep]
    return records[:, 1:].copy(), [int(label) for label in records[:, 0]]


def idx(path):
    raw = gzip.open(path).read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    root, out = sys.argv[1], sys.argv[2]
    small = "--small" in sys.argv[3:]
    keep = 3 if small else None
    for name, source in [("data_batch_1", "data_batch_1.bin.gz"), ("test_batch", "test_batch.bin.gz")]:
        data, labels = cifar_binary(os.path.join(root, "cifar-10", source), keep)
        batch = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))],
        }
        buffer = io.BytesIO()
        Python2Pickler(buffer, protocol=2).dump(batch)
        # Python 2's NumPy named its module numpy.core, and its dtype's byte order was a str.
        py2 = buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        py2 = py2.replace(pickle.BINUNICODE + (1).to_bytes(4, "little") + b"|", pickle.SHORT_BINSTRING + b"\x01|")
        loaded = pickle.loads(py2, encoding="latin1")
        assert loaded["labels"] == labels and (loaded["data"] == data).all(), "the Python 2 pickle reads back"
        write(os.path.join(out, "py2", "cifar-10-batches-py", name), py2)
        for protocol in range(6):
            path = os.path.join(out, f"py3-protocol-{protocol}", "cifar-10-batches-py", name)
            write(path, pickle.dumps(pickle.loads(py2, encoding="bytes"), protocol=protocol))
        if small:
            break

    if small:
        return
    x_train, y_train = idx(f"{root}/mnist/train-images-idx3-ubyte.gz"), idx(f"{root}/mnist/train-labels-idx1-ubyte.gz")
    x_test, y_test = idx(f"{root}/mnist/t10k-images-idx3-ubyte.gz"), idx(f"{root}/mnist/t10k-labels-idx1-ubyte.gz")
    for folder, save in [("keras", np.savez), ("keras-deflated", np.savez_compressed)]:
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        save(os.path.join(out, folder, "mnist.npz"), x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    for split, prefix in [("train", "train"), ("test", "t10k")]:
        images = idx(f"{root}/fashion-mnist/{prefix}-images-idx3-ubyte.gz").reshape(-1, 784)[:2000]
        labels = idx(f"{root}/fashion-mnist/{prefix}-labels-idx1-ubyte.gz")[:2000]
        rows = [header] + [",".join(map(str, [label, *image])) for label, image in zip(labels, images)]
        write(os.path.join(out, "kaggle", f"fashion-mnist_{split}.csv"), ("\n".join(rows) + "\n").encode())


if __name__ == "__main__":
    main()
