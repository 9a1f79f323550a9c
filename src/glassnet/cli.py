"""The ``glassnet`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        parser.exit(2, f"glassnet {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
