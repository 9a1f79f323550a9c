"""examples/bn_convnet.json on Fashion-MNIST: glassnet.fit against PyTorch CPU, step for step.

Run:  python benchmarks/bench_bn.py [--epochs 15] [--seeds 0] [--threads 2] [--json PATH]
Quick check:  python benchmarks/bench_bn.py --epochs 1 --limit 2000

Both frameworks train the same architecture (the PyTorch copy is built from the JSON file's
layers, which have PyTorch's names and arguments) from the same initial weights (glassnet's,
copied), with the same recipe: Adam lr 1e-3, batch 128, float32, no augmentation, and the same
batches: PyTorch's epoch follows the sample order glassnet.fit drew for that epoch. Only the
Dropout masks differ (each framework draws its own). Epochs alternate between the frameworks
so that a busy phase of the machine hits both. Each epoch ends with the test-set accuracy
(used for reporting only; nothing is selected on it).
"""

from __future__ import annotations

import glassnet  # noqa: F401  # isort: skip  (first: it sets OpenBLAS's environment, see README)

import argparse
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

import bench_train
import numpy as np
from bench_train import cpu_description

from glassnet.data import fashion_mnist
from glassnet.kernels import set_num_threads
from glassnet.memory import keep_freed_memory
from glassnet.model_file import build
from glassnet.nn import Module
from glassnet.optim import Adam
from glassnet.train import fit
from glassnet.train.callbacks import Callback

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bn_convnet.json"
GLASSNET_ONLY = ("init", "rng", "dtype")  # constructor arguments torch.nn does not take


def seeded_copy(module: Module, rng: np.random.Generator) -> Module:
    """A new model of ``module``'s architecture whose layers draw from ``rng`` (weights,
    Dropout masks), so that a seed fixes the run; ``build`` alone leaves them unseeded."""
    args, kwargs = module.constructor_arguments()
    args = [seeded_copy(arg, rng) if isinstance(arg, Module) else arg for arg in args]
    if "rng" in inspect.signature(type(module)).parameters:
        kwargs = {**kwargs, "rng": rng}
    return type(module)(*args, **kwargs)


def torch_copy(torch, module: Module):
    """The same layers in ``torch.nn`` (glassnet's layers use PyTorch's names and arguments)."""
    args, kwargs = module.constructor_arguments()
    args = [torch_copy(torch, arg) if isinstance(arg, Module) else arg for arg in args]
    kwargs = {key: value for key, value in kwargs.items() if key not in GLASSNET_ONLY}
    return getattr(torch.nn, type(module).__name__)(*args, **kwargs)


class PyTorchTwin(Callback):
    """After each glassnet epoch, one PyTorch epoch over the same batches, in the same order."""

    def __init__(self, torch, net, data, batch_size: int) -> None:
        self.torch, self.net, self.batch_size = torch, net, batch_size
        self.x_train, self.y_train, self.x_test, self.y_test = map(torch.from_numpy, data)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        self.history: list[dict[str, Any]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.order = self.torch.from_numpy(self.trainer.order.copy())

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        torch, net = self.torch, self.net
        net.train()
        loss_sum = 0.0
        start = time.perf_counter()
        for i in range(0, len(self.order), self.batch_size):
            index = self.order[i : i + self.batch_size]
            self.optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(self.x_train[index]), self.y_train[index])
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.item() * len(index)
        seconds = time.perf_counter() - start
        self.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / len(self.order),
                "val_accuracy": self.accuracy(),
                "epoch_seconds": seconds,
            }
        )
        report(record, self.history[-1])

    def accuracy(self) -> float:
        """Test-set accuracy in eval mode, in batches of 1000 (as glassnet.evaluate)."""
        self.net.eval()
        correct = 0
        with self.torch.no_grad():
            for i in range(0, len(self.x_test), 1000):
                predicted = self.net(self.x_test[i : i + 1000]).argmax(1)
                correct += int((predicted == self.y_test[i : i + 1000]).sum())
        return correct / len(self.x_test)


def report(ours: dict, theirs: dict) -> None:
    print(
        f"{ours['epoch']:>5}  {ours['train_loss']:>8.4f} {ours['val_accuracy']:>8.4f} "
        f"{ours['epoch_seconds']:>7.1f}   {theirs['train_loss']:>8.4f} "
        f"{theirs['val_accuracy']:>8.4f} {theirs['epoch_seconds']:>7.1f}",
        flush=True,
    )


def run_seed(torch, spec: dict, data: tuple[np.ndarray, ...], epochs: int, seed: int) -> dict:
    """Train both frameworks from the same initial weights; their per-epoch records."""
    x_train, y_train, x_test, y_test = data
    model = seeded_copy(build(spec), np.random.default_rng(seed))
    torch.manual_seed(seed)  # PyTorch's Dropout masks
    net = torch_copy(torch, model)
    net.load_state_dict({key: torch.from_numpy(v.copy()) for key, v in model.state_dict().items()})
    twin = PyTorchTwin(torch, net, data, batch_size=128)
    print(f"\nseed {seed}       glassnet                    pytorch")
    print("epoch      loss test acc  train s       loss test acc  train s")
    history = fit(
        model,
        (x_train, y_train),
        optimizer=Adam(model.parameters(), lr=1e-3),
        epochs=epochs,
        batch_size=128,
        val_data=(x_test, y_test),
        seed=seed,
        callbacks=[twin],
        verbose=0,
    )
    return {
        "seed": seed,
        "glassnet": {"epochs": history.history, "test_accuracy": history["val_accuracy"][-1]},
        "pytorch": {"epochs": twin.history, "test_accuracy": twin.history[-1]["val_accuracy"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EXAMPLE), help="a JSON architecture")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--limit", type=int, help="use the first N training and test images (a quick run)"
    )
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument(
        "--blas-kernels",
        choices=["cpu", "environment"],
        default="cpu",
        help=bench_train.BLAS_KERNELS_HELP,
    )
    args = parser.parse_args()
    bench_train.use_cpu_blas_kernels(args.blas_kernels)

    import torch

    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    keep_freed_memory()  # as glassnet.train does; set before either framework runs
    print(f"cpu: {cpu_description()}, {os.cpu_count()} cores")
    print(
        f"numpy {np.__version__}, {bench_train.blas_description()}; torch {torch.__version__}; "
        f"{args.threads} threads each"
    )
    spec = json.loads(Path(args.model).read_text())
    x_train, y_train = fashion_mnist("train")
    x_test, y_test = fashion_mnist("test")
    if args.limit is not None:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    print(
        f"{args.model}: Fashion-MNIST, {len(x_train)} training and {len(x_test)} test images, "
        f"{args.epochs} epochs, Adam 1e-3, batch 128, seeds {args.seeds}"
    )

    data = (x_train, y_train, x_test, y_test)
    runs = [run_seed(torch, spec, data, args.epochs, seed) for seed in args.seeds]

    accuracy = {
        name: np.mean([r[name]["test_accuracy"] for r in runs]) for name in ("glassnet", "pytorch")
    }
    seconds = {
        name: np.mean([e["epoch_seconds"] for r in runs for e in r[name]["epochs"]])
        for name in ("glassnet", "pytorch")
    }
    print(
        f"\nfinal test accuracy (mean of {len(runs)} seed(s)): "
        f"glassnet {accuracy['glassnet']:.4f}, pytorch {accuracy['pytorch']:.4f}, "
        f"difference {100 * (accuracy['glassnet'] - accuracy['pytorch']):+.2f} points"
    )
    print(
        f"mean epoch (training steps): glassnet {seconds['glassnet']:.1f}s "
        f"({len(x_train) / seconds['glassnet']:,.0f} images/s), pytorch {seconds['pytorch']:.1f}s "
        f"({len(x_train) / seconds['pytorch']:,.0f} images/s); "
        f"images/s glassnet/pytorch {seconds['pytorch'] / seconds['glassnet']:.2f}x"
    )
    if args.json:
        summary = {"test_accuracy": accuracy, "epoch_seconds": seconds}
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "mean": summary, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
