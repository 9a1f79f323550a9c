"""Model files: any glassnet model's architecture (JSON) and weights in one safetensors file.

The architecture is the module tree with each module's class name and the arguments it was
constructed with, e.g. ``{"class": "Conv2d", "args": [1, 32, 3], "kwargs": {}}``; children
passed as arguments (Sequential's layers) are nested specs. Loading looks every class name up
in :data:`glassnet.nn.REGISTRY` (glassnet's own classes, and a user's registered with
``@glassnet.nn.register``), calls it with the stored arguments, and loads the weights. Nothing
is unpickled or executed beyond those constructors. The architecture sits in the checkpoint's
JSON metadata, which the file's SHA-256 covers (see :mod:`glassnet.checkpoint`).

Argument values are stored as JSON with tags for what JSON lacks: ``{"tuple": [...]}``,
``{"module": spec}``, ``{"dtype": "float32"}``, ``{"float": "inf"}``,
``{"ndarray": [...], "dtype": ...}``, ``{"dict": {...}}``. A Generator passed as ``rng`` is
not stored (it only drew the initial weights).
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from glassnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from glassnet.nn.module import REGISTRY, Module, StateDictError

FORMAT_VERSION = 1
_SPEC_KEYS = {"class", "args", "kwargs"}
_PLAIN = (type(None), bool, int, str)


@dataclass
class ModelFile:
    """What a model file holds: the rebuilt model and what it was saved with."""

    model: Module
    input_shape: tuple[int, ...] | None = None  # one sample's shape, e.g. (1, 28, 28)
    classes: list[str] | None = None  # class names, index order
    metadata: dict[str, Any] = field(default_factory=dict)  # everything else (training runs)


# --- architecture: Module -> JSON -------------------------------------------------------------


def architecture(module: Module, path: str = "model") -> dict[str, Any]:
    """The JSON-ready spec that :func:`build` turns back into an untrained copy of ``module``."""
    cls = type(module)
    name = cls.__dict__.get("_registered_name") or cls.__name__
    if REGISTRY.get(name, cls) is not cls:  # an unregistered class shadowing a known name
        name = f"{cls.__module__}.{cls.__qualname__}"
    args, kwargs = module.constructor_arguments()
    where = f"{name} at {path!r}"
    return {
        "class": name,
        "args": [_encode(value, f"{where}, argument {i}") for i, value in enumerate(args)],
        "kwargs": {
            key: _encode(value, f"{where}, argument {key!r}")
            for key, value in kwargs.items()
            if not (key == "rng" and isinstance(value, np.random.Generator))
        },
    }


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, Module):
        return {"module": architecture(value, where)}
    if isinstance(value, (tuple, list)):
        items = [_encode(item, where) for item in value]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"dtype": np.dtype(value).name}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"dict": {key: _encode(item, where) for key, item in value.items()}}
    raise ValueError(
        f"cannot save {where}: a {type(value).__name__} cannot be stored in a model file "
        "(numbers, strings, tuples, lists, dicts, arrays, dtypes and Modules can)"
    )


# --- architecture: JSON -> Module -------------------------------------------------------------


def build(spec: Any, where: str = "architecture", rng: np.random.Generator | None = None) -> Module:
    """A new module from :func:`architecture`'s spec; the weights are the constructors' own.

    ``rng`` is passed to every constructor that takes one, so the initial weights (and
    Dropout's Generator) are reproducible; without it they are drawn afresh.
    """
    if not isinstance(spec, dict) or set(spec) != _SPEC_KEYS:
        raise CheckpointError(
            f"{where} must be an object with keys {sorted(_SPEC_KEYS)}, got "
            f"{sorted(spec) if isinstance(spec, dict) else type(spec).__name__}"
        )
    name, args, kwargs = spec["class"], spec["args"], spec["kwargs"]
    if not isinstance(name, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{where}: 'class' must be a string, 'args' a list, 'kwargs' an object"
        )
    cls = REGISTRY.get(name)
    if cls is None:
        raise CheckpointError(
            f"{where}: unknown module class {name!r}. If it is your own Module subclass, "
            f"decorate it with @glassnet.nn.register (before loading) so that it can be rebuilt"
        )
    where = f"{where} ({name})"
    args = [_decode(value, where, rng) for value in args]
    kwargs = {key: _decode(value, where, rng) for key, value in kwargs.items()}
    if rng is not None and "rng" not in kwargs and _takes_rng(cls):
        kwargs["rng"] = rng
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: cannot rebuild it from its arguments: {error}") from None


def _takes_rng(cls: type) -> bool:
    try:
        return "rng" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _decode(value: Any, where: str, rng: np.random.Generator | None = None) -> Any:
    if isinstance(value, (*_PLAIN, float)):
        return value
    if isinstance(value, list):
        return [_decode(item, where, rng) for item in value]
    if not isinstance(value, dict) or not value:
        raise CheckpointError(f"{where}: unreadable argument {value!r}")
    tag = next(iter(value))
    try:
        if tag == "tuple" and len(value) == 1 and isinstance(value[tag], list):
            return tuple(_decode(item, where, rng) for item in value[tag])
        if tag == "module" and len(value) == 1:
            return build(value[tag], where, rng)
        if tag == "float" and value[tag] in ("inf", "-inf", "nan"):
            return float(value[tag])
        if tag == "dtype" and len(value) == 1:
            return np.dtype(value[tag]).type
        if tag == "ndarray" and set(value) == {"ndarray", "dtype"}:
            return np.array(value["ndarray"], dtype=np.dtype(value["dtype"]))
        if tag == "dict" and len(value) == 1 and isinstance(value[tag], dict):
            return {key: _decode(item, where, rng) for key, item in value[tag].items()}
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: unreadable argument {value!r}: {error}") from None
    raise CheckpointError(f"{where}: unreadable argument {value!r}")


# --- files ------------------------------------------------------------------------------------


def model_metadata(
    model: Module, input_shape: tuple[int, ...] | None, classes: list[str] | None
) -> dict[str, Any]:
    """The metadata a file needs so that ``load_model`` can rebuild ``model`` (training
    checkpoints add their own keys beside these)."""
    if input_shape is not None:
        input_shape = [_positive(size, "input_shape") for size in input_shape]
    if classes is not None:
        classes = [str(name) for name in classes]
    return {
        "format_version": FORMAT_VERSION,
        "architecture": architecture(model),
        "input_shape": input_shape,
        "classes": classes,
    }


def _positive(value: Any, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must hold positive integers, got {value!r}")
    return int(value)


def save_model(
    model: Module,
    path: str | os.PathLike,
    *,
    input_shape: tuple[int, ...] | None = None,
    classes: list[str] | None = None,
) -> None:
    """Write ``model``'s architecture and weights (state dict) to ``path``, atomically.

    ``input_shape`` (one sample's, e.g. (1, 28, 28)) and ``classes`` (names in index order)
    are optional; with them ``glassnet predict``, ``summary`` and ``trace`` need no options.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a glassnet Module, got {type(model).__name__}")
    metadata = model_metadata(model, input_shape, classes)
    arrays = {f"model.{key}": value for key, value in model.state_dict().items()}
    save_checkpoint(path, arrays, metadata)


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Rebuild the model in a file from :func:`save_model` or a training checkpoint.

    Raises:
        CheckpointError: the file is corrupt or edited, names an unknown class, or its
            weights do not fit its architecture.
    """
    arrays, metadata = load_checkpoint(path)
    model = _model_from(metadata, path)
    state = {key.removeprefix("model."): v for key, v in arrays.items() if key.startswith("model.")}
    floating = [value.dtype for value in state.values() if value.dtype.kind == "f"]
    if floating and floating[0] != np.float32:
        model.to(floating[0])
    try:
        model.load_state_dict(state)
    except StateDictError as error:
        raise CheckpointError(f"{path}: its weights do not fit its architecture: {error}") from None
    input_shape = metadata.get("input_shape")
    classes = metadata.get("classes")
    if input_shape is not None and not (
        isinstance(input_shape, list) and all(isinstance(s, int) and s > 0 for s in input_shape)
    ):
        raise CheckpointError(f"{path}: input_shape {input_shape!r} is not a list of sizes")
    if classes is not None and not (
        isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    ):
        raise CheckpointError(f"{path}: classes {classes!r} is not a list of names")
    return ModelFile(model, None if input_shape is None else tuple(input_shape), classes, metadata)


def _model_from(metadata: dict[str, Any], path: str | os.PathLike) -> Module:
    version = metadata.get("format_version")
    if "architecture" not in metadata:
        if "config" in metadata:  # a training checkpoint from before model files: the convnet
            from glassnet.nn.models import convnet

            return convnet(dropout=metadata["config"].get("dropout", 0.5))
        raise CheckpointError(f"{path} holds no model architecture")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a model file of format version {version!r}; this glassnet reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        return build(metadata["architecture"], f"{path}: architecture")
    except RecursionError:
        raise CheckpointError(f"{path}: its architecture is nested too deeply") from None


def load_model(path: str | os.PathLike) -> Module:
    """The model in ``path`` (see :func:`save_model`), in eval mode: ready for inference.

    Call ``model.train()`` to go on training it.
    """
    model = read_model_file(path).model
    model.eval()
    return model
