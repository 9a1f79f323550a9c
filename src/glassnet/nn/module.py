"""Parameters, buffers, the Module base class, Sequential and ``no_grad``.

A Module's ``forward(x)`` caches what its backward pass needs; ``backward(grad_out)`` returns
``grad_x`` and *adds* into each parameter's ``.grad`` until ``zero_grad()``, as in PyTorch.
Assigning a :class:`Parameter` or a Module to an attribute registers it (in assignment order),
and ``register_buffer`` adds state that is not trained (BatchNorm's running statistics). State
dict keys are the dotted attribute paths PyTorch uses (``"conv1.weight"``, ``"layers.0.bias"``,
``"bn1.running_mean"``), so a state dict moves between glassnet and the same PyTorch model
unchanged. There is no autograd: a subclass writes ``backward`` by hand.

Every Module remembers the arguments it was constructed with; that is what lets a model file
(:mod:`glassnet.model_file`) rebuild a model from JSON without pickle.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np


class Parameter:
    """A trainable array ``data`` and its accumulated gradient ``grad`` (same shape and dtype)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


# --- gradient mode -----------------------------------------------------------------------------


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """False inside ``with no_grad():``; layers then keep nothing for a backward pass."""
    return _grad_mode.enabled


class no_grad:
    """Run forward passes that keep no caches for backward: inference at a lower memory cost.

    Use as ``with glassnet.no_grad(): logits = model(x)`` or as a function decorator, as
    ``torch.no_grad``. A ``backward`` after such a forward raises an error. Per thread.
    """

    def __enter__(self) -> no_grad:
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = False
        return self

    def __exit__(self, *exc: object) -> None:
        _grad_mode.enabled = self._previous

    def __call__(self, function: Callable) -> Callable:
        @functools.wraps(function)
        def without_grad(*args, **kwargs):
            with no_grad():
                return function(*args, **kwargs)

        return without_grad


# --- the registry of Module classes (model files rebuild models by class name) ------------------

#: class name -> Module subclass, for every class glassnet ships and every ``@register``-ed one
REGISTRY: dict[str, type[Module]] = {}


def register(cls: type[Module] | None = None, *, name: str | None = None):
    """Make a Module subclass loadable from model files: ``@glassnet.nn.register``.

    A model file stores each module's class by ``name`` (default: the class's ``__name__``)
    and the arguments it was constructed with; loading looks the name up here. Use
    ``@register(name="mylib.Block")`` when the plain class name is already taken.
    """

    def add(cls: type[Module]) -> type[Module]:
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise TypeError(f"register expects a glassnet Module subclass, got {cls!r}")
        key = cls.__name__ if name is None else name
        if not isinstance(key, str) or not key:
            raise ValueError(f"name={key!r} must be a non-empty string")
        taken = REGISTRY.get(key)
        if taken is not None and taken is not cls and taken.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"a Module class named {key!r} is already registered ({taken.__module__}."
                f"{taken.__qualname__}); pass another name: @register(name='...')"
            )
        REGISTRY[key] = cls
        cls._registered_name = key
        return cls

    return add if cls is None else add(cls)


# --- Module -----------------------------------------------------------------------------------


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` could not match, as in PyTorch."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class StateDictError(ValueError):
    """A state dict that does not fit the model (keys, shapes)."""


class Module:
    """Base class: registration of parameters, buffers and submodules; modes; state dicts.

    Subclasses define ``forward(x)`` and ``backward(grad_out)``:

    >>> class Scale(Module):
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         self.weight = Parameter(np.ones(n))
    ...     def forward(self, x):
    ...         self._x = x
    ...         return x * self.weight.data
    ...     def backward(self, grad_out):
    ...         self.weight.grad += (grad_out * self._x).sum(axis=0)  # dL/dw = sum_n g x
    ...         return grad_out * self.weight.data  # dL/dx = g w
    >>> list(Scale(3).state_dict())
    ['weight']
    """

    training: bool
    _registered_name: str | None = None
    #: Whether, in eval mode, each sample's output depends on that sample alone (no batch
    #: statistics, nothing mixed across the batch). :class:`Sequential` runs a large
    #: inference batch in slices only when all its layers say so; a user's module says
    #: False unless it sets this.
    samplewise: bool = False
    #: Layer classes that this layer commutes with exactly, values and gradients alike, when
    #: one of them comes next: :class:`Sequential` then runs that layer first, and this one
    #: on its (smaller) output. ReLU says MaxPool2d. Read from the class's own namespace, not
    #: inherited: a subclass that changes forward or backward must say so again.
    commutes_with: tuple[type, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])
        if cls.__module__.startswith("glassnet.") and not cls.__name__.startswith("_"):
            register(cls)  # glassnet's own public classes; users register theirs

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # attribute registration, as torch.nn.Module.__setattr__ / __getattr__

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, (Parameter, Module)):
            if params is None:
                raise AttributeError(
                    f"cannot assign {name!r} before Module.__init__(): call "
                    "super().__init__() first in your __init__"
                )
            self._forget(name)
            store = self._parameters if isinstance(value, Parameter) else self._modules
            store[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r}: "
                    "expected a Parameter or None"
                )
            params[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(
                    f"cannot assign {type(value).__name__} to buffer {name!r}: "
                    "expected a numpy array or None"
                )
            self._buffers[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to submodule {name!r}: "
                    "expected a Module or None"
                )
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: parameters, buffers and submodules
        for store in ("_parameters", "_buffers", "_modules"):
            values = self.__dict__.get(store)
            if values is not None and name in values:
                return values[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if not self._forget(name):
            object.__delattr__(self, name)

    def _forget(self, name: str) -> bool:
        """Drop ``name`` from every registry and the instance dict; True if it was registered."""
        found = False
        for store in (self._parameters, self._buffers, self._modules):
            found |= store.pop(name, False) is not False
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)
        return found

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter or None, got {param!r}")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, array: np.ndarray | None, persistent: bool = True) -> None:
        """State that is saved but not trained (running statistics): in ``state_dict`` unless
        ``persistent=False``, cast by ``to(dtype)`` when floating, never seen by optimizers."""
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"buffer {name!r} must be a numpy array or None, got {array!r}")
        self._forget(name)
        self._buffers[name] = array
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"submodule {name!r} must be a glassnet Module, got {module!r}")
        self._forget(name)
        self._modules[name] = module

    # forward and backward

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} has no forward(): define forward(self, x) returning the "
            "output, keeping what backward needs"
        )

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dL/dx for the last forward call; parameter gradients are added to ``.grad``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no backward(): define backward(self, grad_out) that "
            "returns dL/dx for the last forward call and adds each parameter's gradient into "
            "its .grad (child modules: call child.backward(...) in reverse order)"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # walking the tree

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``) and every descendant, depth first, each once."""
        seen: set[int] = set()

        def walk(module: Module, path: str) -> Iterator[tuple[str, Module]]:
            if id(module) in seen:
                return
            seen.add(id(module))
            yield path, module
            for name, child in module.named_children():
                yield from walk(child, f"{path}.{name}" if path else name)

        yield from walk(self, prefix)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def _named_members(self, store: str, prefix: str) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        for path, module in self.named_modules(prefix):
            for name, value in getattr(module, store).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{path}.{name}" if path else name), value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for every parameter in the tree, shared ones once."""
        return self._named_members("_parameters", prefix)

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        return self._named_members("_buffers", prefix)

    def buffers(self) -> list[np.ndarray]:
        return [buffer for _, buffer in self.named_buffers()]

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype: np.dtype | type | str) -> Module:
        """Cast every parameter (and its gradient) and every floating buffer to ``dtype``."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"dtype={dtype} must be a floating dtype (float32 or float64)")
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            param.grad = param.grad.astype(dtype)
        for module in self.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype.kind == "f":
                    module._buffers[name] = buffer.astype(dtype)
        return self

    # state dicts

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and persistent buffer, keyed as in PyTorch.

        Order: each module's own parameters, then its buffers, then its children's entries.
        """
        state: dict[str, np.ndarray] = {}
        for path, module in self.named_modules():
            dot = f"{path}." if path else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param.data.copy()
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    state[dot + name] = buffer.copy()
        return state

    def _state_entries(self) -> dict[str, tuple[Module, str]]:
        """Dotted key -> (owning module, attribute name), for what ``state_dict`` saves."""
        entries = {}
        for path, module in self.named_modules():
            dot = f"{path}." if path else ""
            for name, param in module._parameters.items():
                if param is not None:
                    entries[dot + name] = (module, name)
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    entries[dot + name] = (module, name)
        return entries

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` into the parameters and buffers (cast to their dtypes).

        With ``strict`` (the default) the keys must match exactly; otherwise the missing and
        unexpected keys are returned, as ``torch.nn.Module.load_state_dict`` does. Shapes
        must always match. Nothing is changed unless the whole state dict fits.
        """
        entries = self._state_entries()
        missing = [key for key in entries if key not in state]
        unexpected = [key for key in state if key not in entries]
        if strict and (missing or unexpected):
            raise StateDictError(
                f"state dict does not fit {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        values = {}
        for key, (module, name) in entries.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            current = module._parameters.get(name)
            target = current.data if current is not None else module._buffers[name]
            if value.shape != target.shape:
                raise StateDictError(
                    f"state dict entry {key!r} has shape {value.shape}, the model's "
                    f"{'parameter' if current is not None else 'buffer'} {target.shape}"
                )
            values[key] = value
        for key, value in values.items():
            module, name = entries[key]
            param = module._parameters.get(name)
            if param is not None:
                param.data[...] = value
            else:
                module._buffers[name][...] = value
        return IncompatibleKeys(missing, unexpected)

    # model files: how to construct this module again

    def constructor_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` that rebuild this module's structure (weights come separately).

        By default the arguments its constructor was called with; a container whose children
        change after construction (Sequential.append) overrides this.
        """
        return self.__dict__.get("_init_arguments", ((), {}))

    # printing

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"({name}): {child!r}" for name, child in self.named_children()]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = ([self.extra_repr()] if self.extra_repr() else []) + children
        inner = "\n".join("  " + line.replace("\n", "\n  ") for line in lines)
        return f"{type(self).__name__}(\n{inner}\n)"

    def _repr_html_(self) -> str:
        """The summary table, as Jupyter shows a model (with shapes: glassnet.html)."""
        from glassnet.html.model_page import summary_table  # html sits above nn: import late

        return summary_table(self)


def _recording_init(init: Callable) -> Callable:
    """Wrap a subclass's ``__init__`` so the outermost call records its arguments."""

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs):
        if "_init_arguments" not in self.__dict__:
            object.__setattr__(self, "_init_arguments", (args, kwargs))
        init(self, *args, **kwargs)

    return recording_init


# --- small checks the layers share ---------------------------------------------------------


def require_cache(layer: Module, cache: object) -> None:
    """The error a ``backward`` without a usable ``forward`` deserves (``cache`` is None)."""
    if cache is None:
        raise RuntimeError(
            f"{type(layer).__name__}.backward() needs a forward() first; if forward ran under "
            "no_grad(), nothing was kept for backward"
        )


def positive_int(value: object, name: str) -> int:
    """``value`` as an int, or a ValueError naming ``name`` if it is not a positive integer."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(value)


@functools.cache
def _accepts_need_input_grad(backward: Callable) -> bool:
    try:
        parameters = inspect.signature(backward).parameters
    except (TypeError, ValueError):
        return False
    return "need_input_grad" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def backward_of(module: Module, grad_out: np.ndarray, need_input_grad: bool = True):
    """``module.backward(grad_out, need_input_grad=...)``, or ``module.backward(grad_out)`` for
    a user's module whose backward takes only the gradient (its input gradient is then
    computed and, if not needed, dropped)."""
    return call_backward(module.backward, grad_out, need_input_grad)


def call_backward(backward: Callable, grad_out: np.ndarray, need_input_grad: bool = True):
    """Call a (bound) backward method as :func:`backward_of` does."""
    if _accepts_need_input_grad(getattr(backward, "__func__", backward)):
        return backward(grad_out, need_input_grad=need_input_grad)
    grad = backward(grad_out)
    return grad if need_input_grad else None


def _fuses_backward(layers: list[Module]) -> bool:
    """Whether the first two layers' backward runs as one (see Sequential.backward); not
    for watched layers, so that a trace shows each layer's own backward."""
    return (
        len(layers) >= 2
        and type(layers[1]) in type(layers[0]).__dict__.get("backward_fuses_with", ())
        and not _replaced_on_instance(layers[0])
        and not _replaced_on_instance(layers[1])
    )


def _fuses_forward(layer: Module, after: Module) -> bool:
    """Whether ``layer`` runs the layer ``after`` it in its own forward pass (``after``'s
    class is in ``layer``'s ``forward_fuses_with``: a Conv2d and its MaxPool2d, see
    Conv2d.forward_pooled); not for watched layers, which a trace shows one by one."""
    return (
        type(after) in type(layer).__dict__.get("forward_fuses_with", ())
        and not _replaced_on_instance(layer)
        and not _replaced_on_instance(after)
    )


def _fuses_relu(layer: Module, after: Module) -> bool:
    """Whether ``layer`` applies the layer ``after`` it in its own pass (``after``'s class
    lists ``layer``'s in ``applied_by``: a ReLU after a max pooling, see
    MaxPool2d.forward_with_relu); not for watched layers, which a trace shows one by one."""
    return (
        type(layer) in type(after).__dict__.get("applied_by", ())
        and not _replaced_on_instance(layer)
        and not _replaced_on_instance(after)
    )


def _replaced_on_instance(module: Module) -> bool:
    """Whether the instance's forward or backward has been replaced (a watcher's wrapper)."""
    return "forward" in module.__dict__ or "backward" in module.__dict__


# Inference slices (Sequential): the samples of the probe slice, and about how many bytes the
# biggest activation of a slice may take (measured on the seeds' convnet at batch 1000: slices
# of 125-250 images, 11-22 MB for the first activation, beat the whole batch by 3-20% in
# paired runs; 64 images were slower again).
PROBE_SAMPLES = 16
SLICE_BYTES = 16 << 20


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    Inference on a big batch (eval mode inside :func:`no_grad`, every layer ``samplewise``)
    runs it in slices whose activations stay in cache: the same numbers up to the rounding of
    products of another size, and less memory.

    Indexing gives a layer, slicing a Sequential of the same layer objects; ``append`` adds one.
    Children are named "0", "1", ... as in ``torch.nn.Sequential``.

    >>> from glassnet.nn import Linear, ReLU
    >>> model = Sequential(Linear(4, 8), ReLU(), Linear(8, 3))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> len(model[1:]), type(model[-1]).__name__
    (2, 'Linear')
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.extend(layers)

    @property
    def layers(self) -> list[Module]:
        return list(self._modules.values())

    def append(self, layer: Module) -> Sequential:
        if not isinstance(layer, Module):
            raise TypeError(
                f"layer {len(self)} must be a glassnet Module, got {type(layer).__name__}"
            )
        self._modules[str(len(self._modules))] = layer
        return self

    def extend(self, layers: Iterable[Module]) -> Sequential:
        for layer in layers:
            self.append(layer)
        return self

    def constructor_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return tuple(self._modules.values()), {}

    @property
    def samplewise(self) -> bool:  # type: ignore[override]
        return all(layer.samplewise for layer in self._modules.values())

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self._runs_in_slices(x):
            return self._forward_in_slices(x)
        return self._forward_whole(x)

    def _runs_in_slices(self, x: object) -> bool:
        """Inference (eval mode, no gradient) on a batch bigger than a probe slice, through
        layers that are all samplewise: no layer keeps anything for a backward pass, and
        each sample's output is the same whatever else is in its slice."""
        return (
            not self.training
            and not is_grad_enabled()
            and isinstance(x, np.ndarray)
            and x.ndim >= 1
            and len(x) > PROBE_SAMPLES
            and self.samplewise
        )

    def _forward_in_slices(self, x: np.ndarray) -> np.ndarray:
        """The batch a slice at a time, each slice's biggest activation about SLICE_BYTES.

        A big batch's activations outgrow the caches, and buffers above glibc's 32 MB mmap
        threshold are page-faulted in afresh on every call (an 86 MB activation cost 22 ms
        of faults here, more than filling it). The probe slice measures the biggest
        activation per sample; the other slices are sized from it.
        """
        probe, largest = x[:PROBE_SAMPLES], 0
        for layer in self._run_order():
            probe = layer(probe)
            largest = max(largest, probe.nbytes if isinstance(probe, np.ndarray) else 0)
        if not isinstance(probe, np.ndarray) or probe.ndim < 1:  # not a batch: no slicing
            return self._forward_whole(x)
        step = max(PROBE_SAMPLES, SLICE_BYTES * PROBE_SAMPLES // max(largest, 1))
        out = np.empty((len(x), *probe.shape[1:]), dtype=probe.dtype)
        out[:PROBE_SAMPLES] = probe
        for start in range(PROBE_SAMPLES, len(x), step):
            out[start : start + step] = self._forward_whole(x[start : start + step])
        return out

    def _forward_whole(self, x: np.ndarray) -> np.ndarray:
        layers = self._run_order()
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _fuses_forward(layers[i], layers[i + 1]):
                pool = layers[i + 1]  # a convolution and its pooling (and the ReLU after it)
                relu = layers[i + 2] if i + 2 < len(layers) else None
                relu = relu if relu is not None and _fuses_relu(pool, relu) else None
                x = layers[i].forward_pooled(x, pool, relu)
                i += 2 if relu is None else 3
                continue
            if i + 1 < len(layers) and _fuses_relu(layers[i], layers[i + 1]):
                x = layers[i].forward_with_relu(x, layers[i + 1])
                i += 2
                continue
            x = layers[i](x)
            i += 1
        return x

    def _run_order(self) -> list[Module]:
        """The layers in the order forward runs them (backward, in reverse).

        That is the order they were given, except that a layer which commutes exactly with
        the next one (its class lists the next one's class in ``commutes_with``) runs after
        it: a ReLU before a MaxPool2d then touches a quarter of the numbers, forward and
        backward, for the same outputs and gradients. Layers being watched (their forward
        or backward replaced on the instance, as :mod:`glassnet.inspect` does) keep their
        place, so a trace shows the model as written.
        """
        layers = list(self._modules.values())
        for i in range(len(layers) - 1):
            layer, after = layers[i], layers[i + 1]
            if (
                type(after) in type(layer).__dict__.get("commutes_with", ())
                and not _replaced_on_instance(layer)
                and not _replaced_on_instance(after)
            ):
                layers[i], layers[i + 1] = after, layer
        return layers

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Each layer's backward, last to first. Without ``need_input_grad``, a first layer
        whose class lists the second's in ``backward_fuses_with`` (a Conv2d before a
        MaxPool2d) takes its weight gradient through the second in one step
        (``backward_through``): the second's input gradient is never made."""
        layers = self._run_order()
        fused = not need_input_grad and _fuses_backward(layers)
        for i in range(len(layers) - 1, 1 if fused else -1, -1):
            if i > 0 and _fuses_relu(layers[i - 1], layers[i]) and layers[i - 1].relu_applied:
                continue  # a ReLU its max pooling applied: the pooling's argmax routes for it
            grad_out = backward_of(layers[i], grad_out, need_input_grad=i > 0 or need_input_grad)
        if fused:
            layers[0].backward_through(layers[1], grad_out)
            return None
        return grad_out

    def __getitem__(self, index: int | slice) -> Module:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"Sequential indices must be integers or slices, not {index!r}")
        if not -len(layers) <= index < len(layers):
            raise IndexError(f"index {index} is out of range for {len(layers)} layers")
        return layers[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))
