"""The ``glassnet`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _vector(text: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers, e.g. 2.0,1.0,0.1"
        ) from None


def _matrix(text: str) -> np.ndarray:
    rows = [_vector(row) for row in text.split(";")]
    if len({len(r) for r in rows}) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every ';'-separated row needs as many numbers")
    return np.stack(rows)


def _target(text: str) -> np.ndarray | int:
    return int(text) if "," not in text and text.strip().lstrip("-").isdigit() else _vector(text)


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _explain(args: argparse.Namespace) -> int:
    from glassnet.explain import render, worked_example

    if args.logits is not None and (args.x is not None or args.w is not None):
        raise ValueError("give either --logits or --x/--w, not both")
    options = {"target": args.target, "lr": args.lr}
    if args.x is not None:
        options["x"] = args.x
    if args.w is not None:
        options["w"] = args.w
    ex = worked_example(args.logits, **options)
    if args.json:
        print(json.dumps(ex.to_json(), indent=2))
    else:
        print(render(ex, color=_use_color(args.color)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from glassnet.train import NonFiniteLossError, TrainConfig, train

    out = Path(args.out or f"runs/{args.dataset}")
    try:
        if args.resume:
            metrics = train(
                None, out, resume=True, epochs=args.epochs, data_dir=args.data_dir, quiet=args.quiet
            )
        else:
            config = TrainConfig(
                dataset=args.dataset,
                epochs=args.epochs or 15,
                batch_size=args.batch_size,
                lr=args.lr,
                optimizer=args.optimizer,
                schedule=args.schedule,
                seed=args.seed,
                val_fraction=args.val_fraction,
            )
            metrics = train(config, out, data_dir=args.data_dir, quiet=args.quiet)
    except NonFiniteLossError as error:
        print(f"glassnet train: stopped: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # a second Ctrl-C: leave at once, the last checkpoint stands
        print("\nglassnet train: aborted", file=sys.stderr)
        return 130
    if metrics["status"] == "interrupted":
        return 130
    print(f"Wrote {out}/checkpoint.safetensors, metrics.json, curves.png, confusion.png")
    return 0


def _load_model(path: str):
    from glassnet.train import restore_run

    run = restore_run(Path(path))
    run.model.eval()
    return run


def _evaluate(args: argparse.Namespace) -> int:
    from glassnet.data import DATASETS, load
    from glassnet.train import evaluate

    run = _load_model(args.checkpoint)
    dataset = args.dataset or run.config.dataset
    classes = DATASETS[dataset].classes
    x, y = load(dataset, "test", args.data_dir)
    result = evaluate(run.model, x, y, len(classes))
    print(
        f"{dataset} test set ({len(y)} images), model from {args.checkpoint} "
        f"(epoch {run.state.epoch})"
    )
    print(f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}\n")
    width = max(map(len, classes))
    print(f"{'class':<{width}}  accuracy")
    for name, accuracy in zip(classes, result["per_class_accuracy"], strict=True):
        print(f"{name:<{width}}  {accuracy:.4f}")
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    matrix = np.array(result["confusion_matrix"])
    cell = max(len(str(matrix.max())), 4)
    print(" " * (width + 1) + "".join(f"{i:>{cell + 1}}" for i in range(len(classes))))
    for i, (name, row) in enumerate(zip(classes, matrix, strict=True)):
        print(f"{name:<{width}} " + "".join(f"{v:>{cell + 1}}" for v in row) + f"   {i}")
    return 0


def _read_images(path: Path, invert: bool) -> np.ndarray:
    """(N, 1, 28, 28) float32 in [0, 1] from a PNG (any size, resized) or an IDX image file."""
    from glassnet.data import read_idx

    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as image:
            gray = image.convert("L")
            if gray.size != (28, 28):
                gray = gray.resize((28, 28), Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, dtype=np.float32)[None]
    else:
        pixels = read_idx(path, 2051).astype(np.float32)
    pixels = pixels[:, None] / 255.0
    return 1.0 - pixels if invert else pixels


def _predict(args: argparse.Namespace) -> int:
    from glassnet.data import DATASETS
    from glassnet.functional import softmax

    run = _load_model(args.checkpoint)
    classes = DATASETS[run.config.dataset].classes
    for file in args.files:
        images = _read_images(Path(file), args.invert)
        probs = softmax(run.model(images), axis=1)
        for i, row in enumerate(probs[: args.limit]):
            top = np.argsort(row)[::-1][: args.top]
            guesses = ", ".join(f"{classes[c]} {row[c]:.3f}" for c in top)
            name = file if len(probs) == 1 else f"{file}[{i}]"
            print(f"{name}: {classes[top[0]]}  ({guesses})")
        if len(probs) > args.limit:
            print(f"... {len(probs) - args.limit} more (raise --limit to see them)")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from glassnet.nn import convnet
    from glassnet.nn.inspect import summary

    print(summary(convnet(), (1, 28, 28)))
    return 0


def _trace(args: argparse.Namespace) -> int:
    from glassnet.nn import convnet
    from glassnet.nn.inspect import format_trace, trace

    model = convnet(rng=np.random.default_rng(0))
    print(format_trace(trace(model, (1, 28, 28)), (1, 28, 28)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glassnet", description="A see-through neural-network library in NumPy."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser(
        "explain",
        help="walk through softmax, cross-entropy and its gradient step by step",
        description="With no options: the worked example x=[1, 2], the 2x3 W, class 1, lr 0.1.",
    )
    explain.add_argument("--x", type=_vector, help="one sample's features, e.g. 1,2")
    explain.add_argument("--w", type=_matrix, help="weights (D rows of C), e.g. '0.2,-0.3;0.5,1'")
    explain.add_argument("--logits", type=_vector, help="start from logits, e.g. 2.0,1.0,0.1")
    explain.add_argument(
        "--target", type=_target, default=1, help="class index (e.g. 1) or one-hot (0,1,0)"
    )
    explain.add_argument("--lr", type=float, default=0.1, help="learning rate of the update")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    explain.set_defaults(run=_explain)

    train = commands.add_parser(
        "train",
        help="train the seeds' convnet (the main job)",
        description="Conv 32 3x3 -> pool -> Conv 64 3x3 -> pool -> Dropout -> Linear 10; "
        "Adam 1e-3, batch 128. Ctrl-C saves a checkpoint; --resume continues from it.",
    )
    train.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    train.add_argument("--data-dir", help="look here first for the dataset's IDX files")
    train.add_argument("--epochs", type=int, help="default 15 (on --resume: the checkpoint's)")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    train.add_argument("--schedule", choices=["none", "step", "cosine"], default="none")
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="output directory (default runs/DATASET)")
    train.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    train.add_argument("--quiet", action="store_true", help="only the per-epoch summary lines")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    evaluate.add_argument("--data-dir")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="classify PNG or IDX images")
    predict.add_argument("checkpoint")
    predict.add_argument("files", nargs="+", metavar="FILE", help="PNG images or IDX files")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show")
    predict.add_argument("--limit", type=int, default=20, help="images shown per file")
    predict.add_argument("--invert", action="store_true", help="dark ink on a light background")
    predict.set_defaults(run=_predict)

    summary = commands.add_parser("summary", help="layers, output shapes and parameter counts")
    summary.set_defaults(run=_summary)
    trace = commands.add_parser("trace", help="shapes of one forward and backward pass")
    trace.set_defaults(run=_trace)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # bad input, missing or broken files
        parser.exit(2, f"glassnet {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
