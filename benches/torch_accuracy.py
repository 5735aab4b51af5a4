"""A tutorial recipe trained to the end in PyTorch: the accuracy Kiln's example should reach.

Same model, optimizer, learning rate, batch size, epochs and input scaling as
benches/torch_train.py (and as `kiln::tutorials`), trained on the full training set and scored
on the test set after every epoch. For Fashion-MNIST and MNIST only (their test sets are IDX
files beside the training set).

    python3 benches/torch_accuracy.py TUTORIAL [--epochs N] [--seed S] [--threads N]
                                      [--init torch|keras] [--augment]

--init keras starts from Keras's defaults (Glorot-uniform weights, zero biases), as Kiln's
examples do with --init keras (and its MNIST MLP, the Keras tutorial's, by default). --augment trains on augmented images as Kiln's examples do with
--augment (`Tutorial::augmented_transform`): clothes mirrored at random, digits shifted by up
to two whole pixels (zero fill).
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from torch_train import BATCH, idx_images, model, optimizer

EPOCHS = {"fashion_mnist_cnn": 20, "fashion_mnist_mlp": 5, "mnist_mlp": 5}
# (mirror, largest shift in pixels) of --augment.
AUGMENT = {"fashion_mnist_cnn": (True, 0), "fashion_mnist_mlp": (True, 0), "mnist_mlp": (False, 2)}


def tensors(directory, split):
    images, labels = idx_images(directory, split)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def keras_init(net):
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def augment(x, mirror, shift, generator):
    """Mirror each image with probability 1/2 (when mirror), then shift it by -shift..=shift
    whole pixels in each direction."""
    n, _, h, w = x.shape
    if mirror:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if shift == 0:
        return x
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tutorial", choices=sorted(EPOCHS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--init", choices=["torch", "keras"], default="torch")
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    root = Path(os.environ.get("KILN_DATA_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    directory = root / ("mnist" if args.tutorial == "mnist_mlp" else "fashion-mnist")
    train_x, train_y = tensors(directory, "train")
    test_x, test_y = tensors(directory, "t10k")
    net = model(args.tutorial)
    if args.init == "keras":
        keras_init(net)
    opt = optimizer(args.tutorial, net.parameters())
    batch = BATCH[args.tutorial]
    shuffle = args.tutorial != "fashion_mnist_mlp"
    print(f"{args.tutorial}: torch {torch.__version__}, {args.threads} threads, seed {args.seed}, "
          f"{args.init} init{', augmented' if args.augment else ''}")
    for epoch in range(args.epochs or EPOCHS[args.tutorial]):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(len(train_y), generator=generator) if shuffle else torch.arange(len(train_y))
        total, correct = 0.0, 0
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            x, y = train_x[rows], train_y[rows]
            if args.augment:
                x = augment(x, *AUGMENT[args.tutorial], generator)
            opt.zero_grad()
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(test_x[i:i + 1000]) for i in range(0, len(test_y), 1000)])
        test_loss = F.cross_entropy(logits, test_y).item()
        test_accuracy = (logits.argmax(1) == test_y).float().mean().item()
        print(f"epoch {epoch + 1:>2}  loss {total / len(order):.4f}  accuracy {correct / len(order):.4f}  "
              f"test loss {test_loss:.4f}  test accuracy {test_accuracy:.4f}  {time.perf_counter() - started:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
