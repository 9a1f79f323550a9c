"""The seeds' convnet on Fashion-MNIST (or MNIST): glassnet against PyTorch CPU, same recipe.

Run:  python benchmarks/bench_train.py [--epochs 15] [--threads 2] [--dataset fashion-mnist]

Recipe (Keras's MNIST convnet): Conv 32 3x3 -> ReLU -> MaxPool 2 -> Conv 64 3x3 -> ReLU ->
MaxPool 2 -> Flatten -> Dropout 0.5 -> Linear 10, Adam lr 1e-3, batch 128, the last 10% of the
training set held out for validation, each framework's default initialisation. Both train in
this process, one after the other; the script prints per-epoch times and accuracies side by
side, then training and inference throughput (images per second), and writes --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from glassnet.data import load, validation_split
from glassnet.memory import keep_freed_memory
from glassnet.nn import CrossEntropyLoss, convnet
from glassnet.optim import Adam
from glassnet.train import TrainConfig, train


def torch_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10),
    )  # fmt: skip


def train_torch(torch, data, epochs, batch_size, seed):
    x_train, y_train, x_val, y_val, x_test, y_test = (torch.from_numpy(a) for a in data)
    torch.manual_seed(seed)
    model = torch_model(torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []

    def accuracy(x, y):
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
                for i in range(0, len(x), 1000)
            )
        return correct / len(x)

    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), batch_size):
            index = order[i : i + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        history.append(
            {"epoch": epoch + 1, "epoch_seconds": seconds, "val_accuracy": accuracy(x_val, y_val)}
        )
        val = history[-1]["val_accuracy"]
        print(f"  pytorch epoch {epoch + 1:>2}: {seconds:6.1f}s, val acc {val:.4f}", flush=True)
    return history, accuracy(x_test, y_test)


def throughput(step, images: int, repeat: int = 5) -> float:
    step()
    start = time.perf_counter()
    for _ in range(repeat):
        step()
    return images * repeat / (time.perf_counter() - start)


def measure_throughput(torch, x_train, y_train):
    """Images per second: a training step at batch 128, inference at batch 1000."""
    xb, yb = x_train[:128], y_train[:128]
    xi = x_train[:1000]
    model = convnet(rng=np.random.default_rng(0))
    optimizer, loss_fn = Adam(model.parameters()), CrossEntropyLoss()

    def ours_train():
        model.train()
        model.zero_grad()
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()

    def ours_infer():
        model.eval()
        model(xi)

    net = torch_model(torch)
    torch_opt = torch.optim.Adam(net.parameters())
    txb, tyb, txi = torch.from_numpy(xb), torch.from_numpy(yb), torch.from_numpy(xi)

    def torch_train():
        net.train()
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(net(txb), tyb).backward()
        torch_opt.step()

    def torch_infer():
        net.eval()
        with torch.no_grad():
            net(txi)

    return {
        "train_images_per_s": {
            "glassnet": throughput(ours_train, 128, 20),
            "pytorch": throughput(torch_train, 128, 20),
        },
        "inference_images_per_s": {
            "glassnet": throughput(ours_infer, 1000),
            "pytorch": throughput(torch_infer, 1000),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="one run of each framework per seed; accuracy is compared on the mean",
    )
    parser.add_argument("--json", default="bench_train.json", help="where to write the results")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as glassnet.train does; set before either framework runs
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}, "
        f"torch {torch.__version__} ({args.threads} threads); {args.dataset}, {args.epochs} "
        f"epochs, seeds {args.seeds}"
    )
    x_train, y_train = load(args.dataset, "train", args.data_dir)
    x_test, y_test = load(args.dataset, "test", args.data_dir)
    (xt, yt), (xv, yv) = validation_split(x_train, y_train, 0.1)

    speed = measure_throughput(torch, xt, yt)
    for name, numbers in speed.items():
        ratio = numbers["glassnet"] / numbers["pytorch"]
        print(
            f"{name}: glassnet {numbers['glassnet']:,.0f}, pytorch {numbers['pytorch']:,.0f} "
            f"(glassnet/pytorch {ratio:.2f}x)"
        )

    runs = []
    for seed in args.seeds:
        print(f"seed {seed}, PyTorch CPU:")
        history, test = train_torch(torch, (xt, yt, xv, yv, x_test, y_test), args.epochs, 128, seed)
        print(f"seed {seed}, glassnet:")
        config = TrainConfig(dataset=args.dataset, epochs=args.epochs, seed=seed)
        metrics = train(config, data=(x_train, y_train, x_test, y_test), quiet=True)
        runs.append(
            {
                "seed": seed,
                "glassnet": metrics,
                "pytorch": {"epochs": history, "test_accuracy": test},
            }
        )

        header = ("epoch", "glassnet s", "pytorch s", "glassnet val", "torch val")
        print("\n{:>5} {:>11} {:>10} {:>13} {:>10}".format(*header))
        for ours, theirs in zip(metrics["epochs"], history, strict=True):
            print(
                f"{ours['epoch']:>5} {ours['epoch_seconds']:>11.1f} "
                f"{theirs['epoch_seconds']:>10.1f} {ours['val_accuracy']:>13.4f} "
                f"{theirs['val_accuracy']:>10.4f}"
            )
        print(
            f"seed {seed} test accuracy: glassnet {metrics['test_accuracy']:.4f}, "
            f"pytorch {test:.4f}\n"
        )

    def mean_epoch(framework):
        return np.mean([e["epoch_seconds"] for r in runs for e in r[framework]["epochs"]])

    ours_acc = [r["glassnet"]["test_accuracy"] for r in runs]
    torch_acc = [r["pytorch"]["test_accuracy"] for r in runs]
    print(
        f"mean epoch (training steps): glassnet {mean_epoch('glassnet'):.1f}s, "
        f"pytorch {mean_epoch('pytorch'):.1f}s "
        f"(glassnet/pytorch {mean_epoch('glassnet') / mean_epoch('pytorch'):.2f}x)"
    )
    print(
        f"test accuracy over {len(runs)} seed(s): glassnet {np.mean(ours_acc):.4f} "
        f"(+-{np.std(ours_acc):.4f}), pytorch {np.mean(torch_acc):.4f} "
        f"(+-{np.std(torch_acc):.4f}); "
        f"difference of the means {100 * (np.mean(ours_acc) - np.mean(torch_acc)):+.2f} points"
    )
    with open(args.json, "w") as f:
        json.dump({"runs": runs, "throughput": speed, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
