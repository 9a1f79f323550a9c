"""The ``glassnet`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# NumPy (and Numba behind glassnet's modules) is imported inside the commands, so that
# `glassnet --help` and argument errors answer at once.


def _vector(text: str) -> Any:
    import numpy as np

    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers, e.g. 2.0,1.0,0.1"
        ) from None


def _matrix(text: str) -> Any:
    import numpy as np

    rows = [_vector(row) for row in text.split(";")]
    if len({len(r) for r in rows}) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every ';'-separated row needs as many numbers")
    return np.stack(rows)


def _target(text: str) -> Any:
    return int(text) if "," not in text and text.strip().lstrip("-").isdigit() else _vector(text)


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _explain(args: argparse.Namespace) -> int:
    from glassnet.explain import render, worked_example

    if args.checkpoint is not None:
        return _explain_model(args)
    if args.logits is not None and (args.x is not None or args.w is not None):
        raise ValueError("give either --logits or --x/--w, not both")
    options = {"target": args.target, "lr": args.lr}
    if args.x is not None:
        options["x"] = args.x
    if args.w is not None:
        options["w"] = args.w
    ex = worked_example(args.logits, **options)
    if args.html:
        from glassnet.html import explain_page, write_html

        write_html(args.html, explain_page(ex))
        print(f"Wrote {args.html}")
    elif args.json:
        print(json.dumps(ex.to_json(), indent=2))
    else:
        print(render(ex, color=_use_color(args.color)))
    return 0


def _explain_model(args: argparse.Namespace) -> int:
    """``glassnet explain CHECKPOINT IMAGE --html PATH``: one image's trace through a model."""
    from glassnet.data import printable, read_images
    from glassnet.html import explain_model

    if args.image is None or args.html is None:
        raise ValueError("explain CHECKPOINT needs an IMAGE and --html PATH to write the page to")
    opened = _open_model(args.checkpoint)
    shape = _input_shape(opened, args.input_shape, args.checkpoint)
    images = read_images(args.image, shape, args.invert)
    if len(images) == 0:
        raise ValueError(f"IMAGE {printable(args.image)} holds no images")
    count = len(opened.classes) if opened.classes is not None else None
    classes = _class_names(opened, count, args.checkpoint) if count else None
    title = f"glassnet explain: {Path(args.checkpoint).name} on {Path(args.image).name}"
    page = explain_model(opened.model, images[0], classes, args.target_class, title)
    page.save(args.html)
    print(f"Wrote {args.html}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from glassnet.html.report import write_report

    path = write_report(args.run_dir, data_dir=args.data_dir)
    print(f"Wrote {path}")
    return 0


# glassnet train's options: (flag, TrainConfig field, type, help). Their defaults are
# TrainConfig's; argparse's are None so that --resume can tell which ones were given.
TRAIN_OPTIONS = (
    ("--model", "model", str, "convnet, mlp, or a JSON architecture (e.g. examples/*.json)"),
    ("--epochs", "epochs", int, "epochs to train (on --resume: train up to this many)"),
    ("--batch-size", "batch_size", int, "images per step"),
    ("--lr", "lr", float, "learning rate"),
    ("--optimizer", "optimizer", str, "adam, adamw, sgd or rmsprop"),
    ("--schedule", "schedule", str, "learning-rate schedule: none, step or cosine"),
    ("--augment", "augment", str, "none, shift or shift+flip (flips: not for digits)"),
    ("--val-fraction", "val_fraction", float, "the last fraction of the training set validates"),
    ("--dropout", "dropout", float, "dropout probability of the built-in models"),
    ("--seed", "seed", int, "seeds the initial weights and every random draw of the loop"),
)


def _train_config(args: argparse.Namespace):
    """A TrainConfig from the options given; validated before any data is loaded."""
    from glassnet.train import TrainConfig

    given = {field: getattr(args, field) for _, field, _, _ in TRAIN_OPTIONS}
    given = {field: value for field, value in given.items() if value is not None}
    if args.data is not None:
        given |= {"dataset": None, "data": args.data}
    elif args.dataset is not None:
        given["dataset"] = args.dataset
    return TrainConfig(**given), given


def _train(args: argparse.Namespace) -> int:
    from glassnet.distributed import launched_by_mpi, world
    from glassnet.html.report_callback import RunReportWriter
    from glassnet.train import train
    from glassnet.train.recipe import read_run_config, resume_conflicts

    config, given = _train_config(args)
    name = Path(config.data).stem if config.data else config.dataset
    out = Path(args.out or f"runs/{name}")
    if args.resume:
        saved = read_run_config(out)
        differ = [
            f"--{field.replace('_', '-')} {given[field]} (the run has {getattr(saved, field)})"
            for field in resume_conflicts(given, saved)
        ]
        if differ:
            raise ValueError(
                f"--resume continues {out} as it was; these options differ: " + "; ".join(differ)
            )
    distributed = launched_by_mpi()  # mpiexec -n P glassnet train: data-parallel over P
    main = not distributed or world().rank == 0
    _prepare_process(main)
    try:
        metrics = train(
            None if args.resume else config,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            epochs=given.get("epochs") if args.resume else None,
            data_dir=args.data_dir,
            quiet=args.quiet,
            distributed=distributed,
            sync_batchnorm=args.sync_batchnorm,
            callbacks=[] if args.no_report else [RunReportWriter(out, data_dir=args.data_dir)],
        )
    except KeyboardInterrupt:  # a second Ctrl-C: leave at once, the last checkpoint stands
        print("\nglassnet train: aborted", file=sys.stderr)
        return 130
    return _train_status(metrics, out, report=not args.no_report) if main else 0


def _prepare_process(main: bool = True) -> None:
    """What the training command does to its own process (a library's fit() never does)."""
    from glassnet import kernels
    from glassnet.memory import keep_freed_memory

    keep_freed_memory()  # reuse freed activation-sized blocks: see glassnet.memory
    if main and kernels.enabled() and not kernels.cache_is_warm():
        print(
            "Compiling glassnet's kernels for this machine (once; later runs load them)...",
            file=sys.stderr,
            flush=True,
        )


def _train_status(metrics: dict, out: Path, report: bool = True) -> int:
    status = metrics["status"]
    if status == "diverged":
        print(
            f"glassnet train: the last good checkpoint in {out} was kept; try a smaller --lr",
            file=sys.stderr,
        )
        return 3
    if status == "interrupted":
        print(f"Interrupted; saved {out}/checkpoint.safetensors. Continue with --resume.")
        return 130
    written = "checkpoint.safetensors, metrics.json, history.csv, curves.png, confusion.png"
    print(f"Wrote {out}/{written}" + (", report.html" if report else ""))
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,28,28 (C,H,W)")
    return shape


def _run_config(opened) -> dict:
    """The training options a checkpoint records ({} for a plain model file)."""
    run = opened.metadata.get("run")
    config = run.get("config") if isinstance(run, dict) else opened.metadata.get("config")
    return config if isinstance(config, dict) else {}


def _open_model(path: str):
    """The model file (or training checkpoint) at ``path``, its model in eval mode."""
    from glassnet.model_file import read_model_file

    opened = read_model_file(Path(path))
    opened.model.eval()
    return opened


def _input_shape(opened, given: tuple[int, ...] | None, path: str) -> tuple[int, ...]:
    shape = given or opened.input_shape
    if shape is None:
        raise ValueError(
            f"{path} does not record its input shape: pass --input-shape, e.g. 1,28,28"
        )
    return tuple(shape)


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from glassnet.data import DATASETS, load
    from glassnet.train import evaluate

    opened = _open_model(args.checkpoint)
    dataset = args.dataset or _run_config(opened).get("dataset")
    if dataset is None:
        raise ValueError(
            f"{args.checkpoint} does not say which dataset it was trained on: "
            "pass --dataset mnist or --dataset fashion-mnist"
        )
    classes = DATASETS[dataset].classes
    if opened.classes is not None and list(opened.classes) != list(classes):
        raise ValueError(
            f"{args.checkpoint} was trained on other classes ({', '.join(opened.classes[:3])}, "
            f"...) than {dataset}'s ({', '.join(classes[:3])}, ...): pass the --dataset it "
            "was trained on"
        )
    x, y = load(dataset, "test", args.data_dir)
    _check_images(x, opened, args.checkpoint, f"the {dataset} test set")
    result = evaluate(opened.model, (x, y))
    epoch = opened.metadata.get("epoch")
    trained = f" (epoch {epoch})" if epoch is not None else ""
    print(f"{dataset} test set ({len(y)} images), model from {args.checkpoint}{trained}")
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


def _check_images(x: Any, opened, path: str, source: str) -> None:
    if opened.input_shape is not None and tuple(x.shape[1:]) != opened.input_shape:
        raise ValueError(
            f"{source} holds images of shape {tuple(x.shape[1:])}, but {path} expects "
            f"{opened.input_shape}"
        )


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    return parse


def _class_names(opened, count: int, path: str) -> list[str]:
    """The names of the model's ``count`` classes, escaped for the terminal."""
    from glassnet.data import DATASETS, printable

    dataset = _run_config(opened).get("dataset")
    if opened.classes is not None:
        if len(opened.classes) != count:
            raise ValueError(
                f"{printable(path)} names {len(opened.classes)} classes, but its model gives "
                f"{count} scores"
            )
        names = opened.classes
    elif isinstance(dataset, str) and len(DATASETS.get(dataset, ())) == count:
        names = DATASETS[dataset].classes
    else:
        names = [str(i) for i in range(count)]
    return [printable(name) for name in names]


def _predict(args: argparse.Namespace) -> int:
    from glassnet.data import printable, read_images
    from glassnet.functional import softmax
    from glassnet.nn import no_grad

    opened = _open_model(args.checkpoint)
    shape = _input_shape(opened, args.input_shape, args.checkpoint)
    for file in args.files:
        images = read_images(file, shape, args.invert)
        if len(images) == 0:
            print(f"{printable(file)}: holds no images")
            continue
        with no_grad():
            probs = softmax(opened.model(images), axis=1)
        classes = _class_names(opened, probs.shape[1], args.checkpoint)
        _print_guesses(printable(file), probs, classes, args.top, args.limit)
    return 0


def _print_guesses(name: str, probs: Any, classes: list[str], top: int, limit: int) -> None:
    import numpy as np

    """A line per image, at most ``limit``: the best class, then the ``top`` most probable."""
    for i, row in enumerate(probs[:limit]):
        best = np.argsort(row)[::-1][: min(top, len(row))]
        guesses = ", ".join(f"{classes[c]} {row[c]:.3f}" for c in best)
        label = name if len(probs) == 1 else f"{name}[{i}]"
        print(f"{label}: {classes[best[0]]}  ({guesses})")
    if len(probs) > limit:
        print(f"... {len(probs) - limit} more (raise --limit to see them)")


def _model_and_shape(args: argparse.Namespace):
    """The model a summary or trace looks at: a file's, or the seeds' convnet."""
    import numpy as np

    from glassnet.nn import convnet

    if args.model is None:
        return convnet(rng=np.random.default_rng(0)), args.input_shape or (1, 28, 28)
    opened = _open_model(args.model)
    return opened.model, _input_shape(opened, args.input_shape, args.model)


def _summary(args: argparse.Namespace) -> int:
    from glassnet.inspect import summary

    model, shape = _model_and_shape(args)
    print(summary(model, shape))
    return 0


def _trace(args: argparse.Namespace) -> int:
    from glassnet.inspect import format_trace, trace

    model, shape = _model_and_shape(args)
    print(format_trace(trace(model, shape), shape))
    return 0


def _export(args: argparse.Namespace) -> int:
    from glassnet.onnx import export

    opened = _open_model(args.checkpoint)
    shape = _input_shape(opened, args.input_shape, args.checkpoint)
    export(opened.model, args.out, shape, opset=args.opset)
    print(f"Wrote {args.out} (ONNX opset {args.opset}, input (N, {', '.join(map(str, shape))}))")
    return 0


def _train_defaults() -> dict[str, object]:
    """TrainConfig's defaults, read without importing it (and NumPy) for --help."""
    return {
        "model": "convnet",
        "epochs": 15,
        "batch_size": 128,
        "lr": 0.001,
        "optimizer": "adam",
        "schedule": "none",
        "augment": "none",
        "val_fraction": 0.1,
        "dropout": 0.5,
        "seed": 0,
    }


def build_parser() -> argparse.ArgumentParser:
    from glassnet import __version__

    parser = argparse.ArgumentParser(
        prog="glassnet", description="A see-through neural-network library in NumPy."
    )
    parser.add_argument("--version", action="version", version=f"glassnet {__version__}")
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
    explain.add_argument(
        "--html", metavar="PATH", help="write a self-contained HTML page to PATH instead"
    )
    explain.add_argument(
        "checkpoint", nargs="?", help="a model file or checkpoint: explain IMAGE through it"
    )
    explain.add_argument("image", nargs="?", help="a PNG, JPEG, BMP or IDX image (the first)")
    explain.add_argument(
        "--class",
        dest="target_class",
        type=_count(0),
        help="with CHECKPOINT: the class whose loss is differentiated (default: the predicted)",
    )
    explain.add_argument("--invert", action="store_true", help="dark ink on a light background")
    explain.add_argument("--input-shape", type=_shape, help="one sample's shape C,H,W")
    explain.set_defaults(run=_explain)

    train = commands.add_parser(
        "train",
        help="train the seeds' convnet, or any model on any data (the main job)",
        description="Default: the seeds' convnet (Conv 32 3x3 -> pool -> Conv 64 3x3 -> pool -> "
        "Dropout -> Linear 10), Adam 1e-3, batch 128, 15 epochs. Ctrl-C saves a checkpoint; "
        "--resume continues from it. Under mpiexec -n P: data-parallel over P processes, "
        "each a slice of every batch (see docs/distributed.md).",
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", choices=["mnist", "fashion-mnist"], help="a built-in dataset (default: mnist)"
    )
    source.add_argument(
        "--data", help="an image folder with train/ and test/, a .npz, or a folder of IDX files"
    )
    train.add_argument("--data-dir", help="look here first for a built-in dataset's IDX files")
    defaults = _train_defaults()
    for flag, field, kind, text in TRAIN_OPTIONS:
        train.add_argument(
            flag,
            dest=field,
            type=kind,
            metavar=field.upper(),
            help=f"{text} (default: {defaults[field]})",
        )
    train.add_argument("--out", help="the run's directory (default: runs/DATASET)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--overwrite", action="store_true", help="start a new run in an --out that holds one"
    )
    train.add_argument("--quiet", action="store_true", help="only the per-epoch summary lines")
    train.add_argument(
        "--no-report", action="store_true", help="do not write report.html when the run ends"
    )
    train.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="under mpiexec: BatchNorm statistics over the whole global batch, not per process",
    )
    train.set_defaults(run=_train)

    report = commands.add_parser(
        "report",
        help="write RUN_DIR/report.html: curves, confusion matrix, misclassified images",
        description="The HTML report of a glassnet train --out directory; its test set is "
        "the run's (a built-in dataset already on disk, or its --data path).",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a glassnet train --out directory")
    report.add_argument("--data-dir", help="look here first for a built-in dataset's IDX files")
    report.set_defaults(run=_report)

    evaluate = commands.add_parser("evaluate", help="test accuracy of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    evaluate.add_argument("--data-dir")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="classify PNG, JPEG, BMP or IDX images")
    predict.add_argument("checkpoint")
    predict.add_argument(
        "files", nargs="+", metavar="FILE", help="PNG, JPEG or BMP images, or IDX image files"
    )
    predict.add_argument("--top", type=_count(1), default=3, help="how many classes to show")
    predict.add_argument("--limit", type=_count(0), default=20, help="images shown per file")
    predict.add_argument("--invert", action="store_true", help="dark ink on a light background")
    predict.set_defaults(run=_predict)

    shape_help = "one sample's shape C,H,W (default: the one the model file records)"
    predict.add_argument("--input-shape", type=_shape, help=shape_help)

    for name, run, text in (
        ("summary", _summary, "layers, output shapes and parameter counts"),
        ("trace", _trace, "shapes of one forward and backward pass"),
    ):
        command = commands.add_parser(
            name,
            help=text,
            description=f"{text} of a model file's "
            "model, or of the seeds' convnet when none is given",
        )
        command.add_argument("model", nargs="?", help="a model file or training checkpoint")
        command.add_argument("--input-shape", type=_shape, help=shape_help)
        command.set_defaults(run=run)

    export = commands.add_parser(
        "export",
        help="write a model file as ONNX",
        description="Eval-mode semantics (Dropout off, BatchNorm's running statistics), a "
        "dynamic batch axis. Needs the onnx package: pip install 'glassnet[onnx]'.",
    )
    export.add_argument("checkpoint", help="a model file or training checkpoint")
    export.add_argument("out", help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or newer)")
    export.add_argument("--input-shape", type=_shape, help=shape_help)
    export.set_defaults(run=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # glassnet ... | head: the reader left; leave quietly too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 0
    except (ValueError, OSError, ImportError) as error:  # bad input, broken files, no extra
        from glassnet.data.text import printable  # paths in messages come from users

        message = "\n".join(map(printable, str(error).split("\n")))  # keep the hints' lines
        parser.exit(2, f"glassnet {args.command}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
