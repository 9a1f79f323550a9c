"""The seeds' convnet on Fashion-MNIST (or MNIST): glassnet against PyTorch CPU, same recipe.

Run:  python benchmarks/bench_train.py [--epochs 15] [--threads 2] [--dataset fashion-mnist]

Recipe (Keras's MNIST convnet): Conv 32 3x3 -> ReLU -> MaxPool 2 -> Conv 64 3x3 -> ReLU ->
MaxPool 2 -> Flatten -> Dropout 0.5 -> Linear 10, Adam lr 1e-3, batch 128, the last 10% of the
training set held out for validation, each framework's default initialisation. Both train in
this process, one after the other; the script prints per-epoch times and accuracies side by
side, then training and inference throughput (images per second), and writes --json.
"""

from __future__ import annotations

import glassnet  # isort: skip  (first: it sets OpenBLAS's environment, see README)

import argparse
import ctypes
import glob
import json
import os
import platform
import sys
import time

import numpy as np

from glassnet._environment import _first_cpu
from glassnet.data import load, validation_split
from glassnet.memory import keep_freed_memory
from glassnet.nn import CrossEntropyLoss, convnet
from glassnet.optim import Adam
from glassnet.train import TrainConfig, train

FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> str:
    """The CPU's model name and which of the SIMD extensions BLAS kernels use it has."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = _first_cpu(f.read())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(cpu.get("flags", "").split())
    have = [flag for flag in FLAGS if flag in flags]
    return f"{cpu.get('model name', platform.machine())} ({', '.join(have) or 'no AVX2'})"


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


def _seconds(step, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - start) / repeat


def side_by_side(ours, theirs, images: int, repeat: int, rounds: int) -> dict[str, float]:
    """Images per second of two steps, timed in alternating rounds; the median round of each.

    Alternating rounds share out slow phases of a busy machine between both frameworks, and
    the median ignores a round that a burst of other work hit.
    """
    ours(), theirs()  # warm up: compile, allocate, fill caches
    times = {"glassnet": [], "pytorch": []}
    for _ in range(rounds):
        times["glassnet"].append(_seconds(ours, repeat))
        times["pytorch"].append(_seconds(theirs, repeat))
    return {name: images / float(np.median(t)) for name, t in times.items()}


def measure_throughput(torch, x_train, y_train, rounds: int = 7):
    """Images per second: a training step at batch 128, inference at batch 1000."""
    xb, yb = x_train[:128], y_train[:128]
    xi = x_train[:1000]
    model = convnet(rng=np.random.default_rng(0))
    optimizer, loss_fn = Adam(model.parameters()), CrossEntropyLoss(reuse_gradient=True)

    def ours_train():
        model.train()
        model.zero_grad()
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()

    def ours_infer():  # as PyTorch's below: eval mode, no gradient kept
        model.eval()
        with glassnet.no_grad():
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
        "train_images_per_s": side_by_side(ours_train, torch_train, 128, 10, rounds),
        "inference_images_per_s": side_by_side(ours_infer, torch_infer, 1000, 2, rounds),
    }


BLAS_KERNELS_HELP = (
    "OpenBLAS kernels: 'cpu' (default) uses the set glassnet picks for this CPU even where the "
    "environment pins another OPENBLAS_CORETYPE (the run is restarted with it, and the header "
    "says so); 'environment' keeps the environment's"
)


def use_cpu_blas_kernels(mode: str) -> None:
    """With mode 'cpu', restart this script with glassnet's OPENBLAS_CORETYPE for this CPU if
    the environment pins a different one (OpenBLAS reads it only when it loads).

    Why: PyTorch, measured in the same process, picks its kernels for the CPU itself (oneDNN
    uses AVX-512 where there is one). An inherited OPENBLAS_CORETYPE=Haswell, a common
    workaround for OpenBLAS#6029 on Zen 5, would hold NumPy's products to AVX2.
    """
    from glassnet._environment import openblas_settings

    if mode != "cpu" or os.environ.get("GLASSNET_BENCH_RESTARTED"):
        return
    try:
        with open("/proc/cpuinfo") as f:
            wanted = openblas_settings({}, f.read()).get("OPENBLAS_CORETYPE")
    except OSError:
        return
    current = os.environ.get("OPENBLAS_CORETYPE")
    if wanted is None or current is None or current.lower() == wanted.lower():
        return
    print(f"[OPENBLAS_CORETYPE={current} in the environment; this run uses {wanted}]", flush=True)
    env = {**os.environ, "OPENBLAS_CORETYPE": wanted, "GLASSNET_BENCH_RESTARTED": current}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def blas_description() -> str:
    """NumPy's BLAS and, for OpenBLAS, the kernel set it chose and its thread timeout."""
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    text = f"{config['name']} {config.get('version', '')}".strip()
    core = None
    for path in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*")):
        if "openblas" in os.path.basename(path):
            library = ctypes.CDLL(path)
            for name in ("scipy_openblas_get_corename64_", "openblas_get_corename"):
                if hasattr(library, name):
                    function = getattr(library, name)
                    function.restype = ctypes.c_char_p
                    core = function().decode()
    if core:
        timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "default")
        text += f" (kernels: {core}, thread timeout: {timeout}"
        if os.environ.get("GLASSNET_BENCH_RESTARTED"):
            text += f"; the environment had {os.environ['GLASSNET_BENCH_RESTARTED']}"
        text += ")"
    return text


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
    parser.add_argument(
        "--blas-kernels", choices=["cpu", "environment"], default="cpu", help=BLAS_KERNELS_HELP
    )
    args = parser.parse_args()
    use_cpu_blas_kernels(args.blas_kernels)

    import torch

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as glassnet.train does; set before either framework runs
    print(
        f"cpu: {cpu_description()}, {os.cpu_count()} cores; numpy {np.__version__}, "
        f"{blas_description()}; torch {torch.__version__} ({args.threads} threads); "
        f"{args.dataset}, {args.epochs} epochs, seeds {args.seeds}"
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
