"""One evaluation on torch tensors: bind, run the loss forward, and backward.

:func:`evaluate` is what the RPC layer (:mod:`lossd.server.rpc`), the unit
tests and the parity harness call; it raises
:class:`~lossd.server.losses.FieldError` naming the field and the rule::

    >>> import torch
    >>> from lossd.server.losses import REGISTRY
    >>> r = evaluate(REGISTRY, "mse", {"y_pred": torch.tensor([1.0]), "y_true": torch.tensor([0.0])}, {})
    >>> float(r.loss), r.grads["y_pred"].tolist()
    (1.0, [2.0])
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..._settings import first_line
from ..._wire import MAX_LOSS_WORK, FieldError
from ..losses import WIRE_NAMES, LossSpec, Registry, strictness
from ._binding import (
    DEPRECATED_PARAMS,
    bind_inputs,
    bind_params,
    check_work,
    grad_targets,
    has_grad,
    legacy_reduction,
    params_from_tensors,
    split_scalars,
)
from ._warnings import capture

log = logging.getLogger("lossd.server")

__all__ = [
    "Binding", "Evaluation", "LossCrashed", "autograd_grad", "bind", "call_backward", "call_loss", "check_param_range",
    "compact", "escaped", "evaluate", "param_copies", "resolve_device", "run_bound",
]


class LossCrashed(RuntimeError):
    """A loss's code raised what no caller may let through (:func:`escaped`); the original is its cause.
    Callers answer it as any internal error: ``INTERNAL``, "see server log", the traceback logged."""


def escaped(name: str, e: BaseException) -> LossCrashed | None:
    """A :class:`LossCrashed` for ``e``, raised by loss ``name``'s code, when ``e`` must not leave it, else
    None (raise ``e`` as it is): a ``BaseException`` that is no ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``: they would stop the server; ``asyncio.CancelledError``: loss
    code runs synchronously, so a cancellation of the call never comes out of it, and one the loss raised
    left the call unanswered, uncounted by the limits and the drain), and ``StopIteration`` /
    ``StopAsyncIteration`` (a coroutine turns them into a RuntimeError, a ``Future`` cannot carry them: the
    call would never end). (A training worker ignores SIGINT: a ``KeyboardInterrupt`` there is the loss's too.)

    >>> escaped("demo", SystemExit(3))
    LossCrashed('loss demo raised SystemExit: 3')
    >>> escaped("demo", ValueError("x")) is None
    True
    """
    if isinstance(e, (StopIteration, StopAsyncIteration)) or not isinstance(e, Exception):
        return LossCrashed(f"loss {name} raised {type(e).__name__}: {e}")
    return None


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`: the loss and gradients by sent name."""

    spec: LossSpec
    loss: torch.Tensor
    grads: dict[str, torch.Tensor]
    forward_s: float = 0.0
    backward_s: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    parameter_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    regularized: list[str] = field(default_factory=list)
    #: What the reply calls the loss: the canonical name, or "a+b" for a composite objective.
    loss_name: str = ""
    #: Warnings raised while evaluating (torch's and lossd's domain warnings), each once, in order.
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loss_name = self.loss_name or self.spec.name


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(
    registry: Registry,
    loss: str,
    inputs: Mapping[str, torch.Tensor],
    params: Mapping[str, Any],
    grad_inputs: Sequence[str] = (),
    grad_output: torch.Tensor | None = None,
    device: torch.device | None = None,
    strict: bool = False,
    *,
    max_loss_work: int = MAX_LOSS_WORK,
) -> Evaluation:
    """Validate, run the loss forward, and backward for the requested inputs (``max_loss_work``: the most
    elements the loss may build beyond them, :func:`check_work`).

    Warnings raised meanwhile (torch's, and lossd's :class:`~lossd.server.losses.Domain`
    warnings) are captured for this call alone, whatever other threads do, and
    returned in ``warnings``; ``strict`` turns the domain warnings into refusals.

    >>> import torch
    >>> from lossd.server.losses import REGISTRY
    >>> evaluate(REGISTRY, "mse", {"y_pred": torch.tensor([1.0, 2.0]), "y_true": torch.tensor([0.0])}, {}).warnings
    ['Using a target size (torch.Size([1])) that is different to the input size (torch.Size([2])). \
This will likely lead to incorrect results due to broadcasting. Please ensure they have the same size.']
    """
    with capture() as seen, strictness(strict):
        binding, tensors = bind(registry, loss, inputs, params, grad_inputs, max_loss_work=max_loss_work)
        result = run_bound(binding, tensors, grad_output, device)
    result.warnings = seen
    return result


@dataclass(frozen=True)
class Binding:
    """What validating a call decided. A server may keep it for the next call of the same
    signature (:mod:`lossd.server.rpc._plan`) when it depends only on the loss, the params and
    the inputs' names, dtypes and shapes: when every sent tensor is an input (a tensor sent for
    a *parameter* is read by value, see :func:`params_from_tensors`)."""

    spec: LossSpec
    #: Canonical input name -> the name it was sent as.
    sent_as: dict[str, str]
    #: The loss's keyword arguments: the bound params, defaults filled in.
    kwargs: dict[str, Any]
    #: Canonical names of the inputs to differentiate.
    wanted: frozenset[str]
    #: Inputs sent in their Python form (:func:`split_scalars`), by canonical name.
    scalars: dict[str, Any] = field(default_factory=dict)
    #: Names of sent tensors that were parameters, read by value.
    tensor_params: frozenset[str] = frozenset()
    #: ``kwargs`` or ``scalars`` hold a list or a dict: each :func:`run_bound` passes copies, so that a loss
    #: changing one changes nothing for the next call of a kept binding (or for a param's default).
    fresh: bool = False
    #: The elements the loss builds beyond its inputs (:func:`check_work`): a kept binding is reused only
    #: under a limit at least this.
    work: int = 0


def bind(
    registry: Registry, loss: str, inputs: Mapping[str, torch.Tensor], params: Mapping[str, Any],
    grad_inputs: Sequence[str] = (), *, max_loss_work: int = MAX_LOSS_WORK,
) -> tuple[Binding, dict[str, torch.Tensor]]:
    """Validate a call: its :class:`Binding` and the input tensors by canonical name (as
    :func:`bind_inputs` leaves them); the loss may build at most ``max_loss_work`` elements beyond them."""
    spec = registry.get(loss)
    inputs, sent_params = params_from_tensors(spec, inputs)
    twice = sorted(sent_params.keys() & params.keys())
    if twice:
        raise FieldError(f"inputs.{twice[0]}", f"{twice[0]!r} was sent twice: as a tensor in inputs and in params")
    params, scalars = split_scalars(spec, legacy_reduction(spec, {**params, **sent_params}))
    tensors, sent_as = bind_inputs(spec, inputs, scalars)
    kwargs = bind_params(spec, params, refused=DEPRECATED_PARAMS)
    work = check_work(spec, {**tensors, **scalars}, kwargs, limit=max_loss_work)  # before anything is computed
    wanted = grad_targets(spec, tensors, sent_as, grad_inputs)
    fresh = spec.mutable_values and any(isinstance(v, (list, dict)) for v in (*kwargs.values(), *scalars.values()))
    return Binding(spec, sent_as, kwargs, frozenset(wanted), scalars, frozenset(sent_params), fresh, work), tensors


def run_bound(
    binding: Binding, tensors: dict[str, torch.Tensor], grad_output: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> Evaluation:
    """The loss forward and backward of a bound call (``tensors`` by canonical name, as :func:`bind`
    returns them)."""
    spec, sent_as, kwargs, wanted = binding.spec, binding.sent_as, binding.kwargs, binding.wanted
    scalars = binding.scalars
    if grad_output is not None and binding.work + sum(t.numel() for t in tensors.values()) >= SHAPE_FIRST_ELEMENTS:
        _check_grad_output_shape(grad_output, _output_shape(binding, tensors))  # before a forward worth saving
    if binding.fresh:
        kwargs, scalars = param_copies(kwargs), param_copies(scalars)
    if device is not None and device.type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    leaves = {}
    for name, t in tensors.items():
        if name in wanted:
            t = t.detach().requires_grad_(True)
            leaves[name] = t
        tensors[name] = t

    start = time.perf_counter()
    with torch.enable_grad():
        out = call_loss(spec, {**tensors, **scalars}, kwargs)
    forward_s = time.perf_counter() - start

    grads: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    if leaves and spec.plugin and not out.requires_grad:
        no_gradient(spec, [sent_as[name] for name in leaves])
    if leaves:
        found = call_backward(spec.name, out, list(leaves.values()), _grad_output(out, grad_output))
        grads = {sent_as[name]: g for name, g in zip(leaves, found)}
    elif grad_output is not None:
        _grad_output(out, grad_output)  # still validate it
    backward_s = time.perf_counter() - start
    return Evaluation(spec, out.detach(), grads, forward_s, backward_s)


def param_copies(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with a copy of each list (of numbers: a list param's, or an input's Python form) and each
    dict (an ``object`` param's, deeply): what one call of a loss gets, so that a loss that changes what it is
    given changes nothing for the next call (``LossSpec.mutable_values``).

    >>> declared = {"weights": [1.0], "p": 2.0}
    >>> param_copies(declared)["weights"] is declared["weights"]
    False
    """
    return {k: copy.deepcopy(v) if isinstance(v, dict) else [*v] if isinstance(v, list) else v
            for k, v in values.items()}


#: :func:`compact` copies a loss out of a storage at least this much larger than its elements. Below it,
#: the memory held is small and the copy (one more node in the graph) would cost about 4 µs a call.
COMPACT_MIN_EXCESS_BYTES = 64 * 1024


def compact(out: torch.Tensor) -> torch.Tensor:
    """``out``, not holding on to a large buffer beyond its own elements: torch's reduced losses can be
    views of the unreduced buffer (``mse_loss`` with ``reduction='mean'`` returns a 0-d tensor whose
    storage is the whole squared-error buffer, 40 MB at 10**7 float32 elements), which would otherwise
    stay allocated through the backward and until the reply is sent. The copy is of the same bits, and
    keeps the graph: a clone's gradient is its upstream gradient, unchanged.

    >>> big = torch.zeros(10**5)
    >>> compact(big[0]).untyped_storage().nbytes(), compact(big[:2]).untyped_storage().nbytes()
    (4, 8)
    >>> compact(torch.arange(4.0)[0]).untyped_storage().nbytes()  # a small excess stays
    16
    """
    if out.untyped_storage().nbytes() - out.numel() * out.element_size() >= COMPACT_MIN_EXCESS_BYTES:
        return out.clone()
    return out


#: torch's C++ names of the integer and bool dtypes, as its "not implemented for 'Long'" errors spell them.
_INTEGER_NAMES = ("Long", "Int", "Short", "Char", "Byte", "Bool")
_COMPLEX_NAMES = ("ComplexHalf", "ComplexFloat", "ComplexDouble")
_UNSUPPORTED_MARKERS = ("not implemented for", "\"_vml_cpu\" not implemented", "unsupported dtype")


def call_loss(spec: LossSpec, tensors: Mapping[str, Any], kwargs: dict[str, Any]) -> torch.Tensor:
    """``spec``'s function on bound inputs — tensors, or an input's Python form from
    :func:`split_scalars` — (``None`` for each absent optional one) and params; torch's own
    errors become ``FieldError`` (``UNIMPLEMENTED`` for what torch cannot do on this server,
    else ``INVALID_ARGUMENT``). The output is :func:`compact`, so that the backward runs without the
    unreduced buffer a reduced loss may be a view of."""
    if spec.ranged_params:  # float64 for float64 tensors, else float32 (most of lossd's losses compute half
        # precision in float32: psnr_loss's max_val 65535 on float16 images is legitimate). No floating tensor: none.
        dtypes = [t.dtype for t in tensors.values() if isinstance(t, torch.Tensor) and has_grad(t)]
        if dtypes:
            check_param_range(spec, kwargs, max([*dtypes, torch.float32], key=lambda d: torch.finfo(d).max))
    inputs: dict[str, Any] = {i.name: None for i in spec.inputs}
    inputs.update(tensors)
    versions = {k: t._version for k, t in tensors.items() if isinstance(t, torch.Tensor)} if spec.plugin else None
    try:
        out = spec.fn(**inputs, **kwargs)
    except FieldError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError) as e:  # ArithmeticError: overflows
        if spec.plugin and isinstance(e, _MAYBE_PLUGIN_MISTAKES):
            _tell_operator(spec, type(e).__name__, f"refused a request with {type(e).__name__}: {e} (the client "
                           "is told its inputs were rejected; if the plugin's own code is at fault, fix it)", e)
        raise _torch_refusal(spec.name, _rejected(spec, tensors, e), e) from e
    except BaseException as e:  # SystemExit, StopIteration...: an internal error, never the server's end
        if (crash := escaped(spec.name, e)) is None:
            raise
        raise crash from e
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"loss {spec.name} returned {type(out).__name__}, not a tensor")
    if versions is not None:  # a plugin's: the next term of an objective reads the same tensors
        for name, version in versions.items():
            if tensors[name]._version != version:
                raise LossCrashed(f"loss {spec.name} (a plugin) wrote to its input {name!r}; a loss must not "
                                  "change its inputs")
    return compact(out)


#: What a plugin's own code may raise (arithmetic on None, a division by zero, a recursion), as torch may on
#: a client's inputs (``torch.finfo`` of an integer tensor, an overflowing param): answered as a refusal of the
#: inputs, and told to the operator once per loss and kind (the plugin audit, 2026-12-06).
_MAYBE_PLUGIN_MISTAKES = (TypeError, ArithmeticError, RecursionError)
_TOLD: set[tuple[str, str]] = set()


def _tell_operator(spec: LossSpec, kind: str, what: str, e: BaseException | None = None) -> None:
    """Log a plugin loss's doubtful outcome once per loss and ``kind`` (clients could repeat it at will)."""
    if (spec.name, kind) not in _TOLD:
        _TOLD.add((spec.name, kind))
        log.warning("loss %s (a plugin, %s) %s", spec.name, spec.source, what, exc_info=e)


def no_gradient(spec: LossSpec, names: Sequence[str]) -> None:
    """A plugin's loss returned a value with no graph while gradients of ``names`` (differentiable inputs) were
    wanted: they are zeros, which the reply's warnings say (a constant on a batch with nothing to learn is
    legitimate; a value computed outside autograd is the plugin's mistake, which the operator is told)."""
    text = (f"{spec.name}: the loss value does not depend on {', '.join(map(repr, names))} (it has no gradient "
            "graph): their gradients are zeros")
    warnings.warn(text, stacklevel=2)
    _tell_operator(spec, "no gradient", f"returned a value with no gradient for {', '.join(map(repr, names))}; "
                   "if it was computed outside autograd (.detach(), .item(), numpy), its gradients are zeros")


def call_backward(
    name: str, out: torch.Tensor, leaves: Sequence[torch.Tensor], upstream: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """The gradients of ``out`` for ``leaves`` (zeros for a leaf it does not depend on), with
    ``upstream`` as the gradient of ``out`` (ones when None). Where torch's backward fails
    (``mse_loss(float32 input, float64 target)``: forward promotes, backward refuses, as locally)
    the error is a ``FieldError`` on ``grad_inputs``, never an internal one.

    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> call_backward("demo", (x * x).sum(), [x, torch.zeros(1, requires_grad=True)])
    [tensor([2., 4.]), tensor([0.])]
    """
    found: Sequence[torch.Tensor | None] = (None,) * len(leaves)
    if out.requires_grad:
        try:
            found = autograd_grad(out, leaves, upstream)
        except (RuntimeError, ValueError, TypeError) as e:
            raise _torch_refusal(name, "has no gradient for these inputs (torch's backward fails, as it would "
                                       "locally; inputs of one dtype avoid it)", e, "grad_inputs") from e
        except BaseException as e:  # a loss's own backward (an autograd.Function) raising SystemExit...
            if (crash := escaped(name, e)) is None:
                raise
            raise crash from e
    return [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, found)]


#: torch's autograd engine, which ``torch.autograd.grad`` calls (``torch/autograd/graph.py``, ``_engine_run_backward``).
_ENGINE = torch.autograd.Variable._execution_engine


def autograd_grad(
    out: torch.Tensor, leaves: Sequence[torch.Tensor], upstream: torch.Tensor | None = None
) -> Sequence[torch.Tensor | None]:
    """``torch.autograd.grad(out, leaves, upstream, allow_unused=True)``: the same engine, the same numbers.

    Where the checks its Python makes are known to pass (plain CPU tensors, no torch function mode, ``upstream``
    of ``out``'s shape and of a kind the engine takes for it, or ``None`` for a real scalar ``out``: ones, as
    torch makes them; at least one leaf), the engine is called as that Python calls it: those checks cost about
    23 µs a call, a third of a small ``mse_loss``'s whole forward and backward (docs/performance.md). (torch's
    autograd debug logging, ``TORCH_LOGS=+autograd``, then names no nodes.) Anything else goes through
    ``torch.autograd.grad``, which raises what it raises (``tests/unit/test_autograd_grad.py``); so does a
    CUDA output, whose backward runs on the device's threads, where torch also hands over its Python context.

    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> autograd_grad((x * x).sum(), [x, torch.zeros(1, requires_grad=True)])
    (tensor([2., 4.]), None)
    """
    plain = type(out) is torch.Tensor and out.device.type == "cpu" and not out.is_nested
    if plain and upstream is None and out.numel() == 1 and out.dtype.is_floating_point:
        upstream = torch.ones_like(out, memory_format=torch.preserve_format)  # torch.autograd.grad's own
    if (
        plain and leaves and type(upstream) is torch.Tensor and out.shape == upstream.shape
        and out.dtype.is_complex == upstream.dtype.is_complex
        and not torch.overrides.has_torch_function((out, upstream, *leaves))
    ):
        return _ENGINE.run_backward((out,), (upstream,), False, False, tuple(leaves), True, False)
    return torch.autograd.grad(out, list(leaves), upstream, allow_unused=True)


def check_param_range(spec: LossSpec, kwargs: Mapping[str, Any], dtype: torch.dtype,
                      fix: str = "send the inputs as float64 or a smaller value") -> None:
    """Refuse a float param of a loss lossd defines (``LossSpec.ranged_params``) beyond the range of ``dtype``,
    the one it computes in: it would become infinite there and the loss NaN. ``fix``: what the caller can do.
    (Half-precision inputs are checked against float32: the losses that do not widen them to float32 can still
    overflow in float16 with a param above 65504.)

    >>> from lossd.server.losses import REGISTRY
    >>> check_param_range(REGISTRY.get("dice_loss"), {"smooth": 1e39}, torch.float32)
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: params.smooth: 1e+39 is beyond float32's range (largest finite 3.4028234663852886e+38), \
the dtype dice_loss computes in here, and would become inf there; send the inputs as float64 or a smaller value
    """
    largest = torch.finfo(dtype).max
    for name in spec.ranged_params:
        value = kwargs.get(name)
        numbers = value if isinstance(value, list) else [value]
        for k, v in enumerate(numbers):
            if isinstance(v, float) and abs(v) > largest:
                where = f"params.{name}" + (f"[{k}]" if isinstance(value, list) else "")
                raise FieldError(where, f"{v!r} is beyond {WIRE_NAMES.get(dtype, str(dtype))}'s range (largest "
                                        f"finite {largest!r}), the dtype {spec.name} computes in here, and would "
                                        f"become inf there; {fix}")


_DTYPE_WORDS = ("dtype", "scalar type", "result type")


def _rejected(spec: LossSpec, tensors: Mapping[str, Any], e: Exception) -> str:
    """What to say of a forward torch refused: which input has a dimension of size 0 past the batch (torch's
    "Kernel size can't be greater than actual input size" named none; it may be a consequence, not the cause, so
    the field stays ``inputs``); where the error is about dtypes and the tensor inputs (class indices aside) came in
    different dtypes, which dtype each has (torch's "expected scalar type Double but found Float" named neither the
    inputs nor the fix).

    >>> from lossd.server.losses import REGISTRY
    >>> _rejected(REGISTRY.get("ssim_loss"), {"input": torch.zeros(1), "target": torch.zeros(1, dtype=torch.int64)},
    ...           RuntimeError("expected scalar type Long but found Float"))
    'rejected tensor inputs of different dtypes (input float32, target int64; send them in one floating-point dtype)'
    >>> _rejected(REGISTRY.get("ssim_loss"), {"input": torch.zeros(1, 1, 5, 0)}, RuntimeError("Kernel size ..."))
    'rejected the inputs (input has a dimension of size 0 past the batch: shape [1, 1, 5, 0])'
    """
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and 0 in t.shape[1:]:
            return f"rejected the inputs ({name} has a dimension of size 0 past the batch: shape {list(t.shape)})"
    dtypes = {}
    for name, t in tensors.items():
        declared = spec.input(name)
        if isinstance(t, torch.Tensor) and declared is not None and (
                declared.kind == "float" or (declared.kind == "float|int" and has_grad(t))):
            dtypes[name] = WIRE_NAMES.get(t.dtype, str(t.dtype))
    if len(set(dtypes.values())) < 2 or not any(w in str(e).lower() for w in _DTYPE_WORDS):
        return "rejected the inputs"
    got = ", ".join(f"{name} {dt}" for name, dt in dtypes.items())
    return f"rejected tensor inputs of different dtypes ({got}; send them in one floating-point dtype)"


def _torch_refusal(name: str, what: str, e: Exception, field: str = "inputs") -> FieldError:
    """torch's own error as a ``FieldError``: ``UNIMPLEMENTED`` for what torch on this server
    lacks (a floating dtype's kernel), else ``INVALID_ARGUMENT`` (no server computes integer,
    bool or complex inputs where torch has no kernel for them)."""
    text = first_line(e)
    if any(f"'{n}'" in text for n in _INTEGER_NAMES):  # torch has no kernel for any server
        return FieldError(field, f"{name}: torch does not compute this for integer or bool inputs: {text}")
    if any(f"'{n}'" in text for n in _COMPLEX_NAMES):  # no server computes it: often a range check ('ge' of a
        return FieldError(field, f"{name} does not compute with complex values: {text}")  # complex: unordered)
    if any(m in text for m in _UNSUPPORTED_MARKERS):
        return FieldError(field, f"{name}: torch on this server cannot do this: {text}", "UNIMPLEMENTED")
    return FieldError(field, f"{name} {what}: {text}")


#: A ``grad_output`` is checked against the loss's shape before the forward (:func:`_output_shape`) when the
#: call's tensors and what its loss builds beyond them (``Binding.work``: a similarity matrix, a broadcast) hold
#: at least this many elements; below, after it. The meta run costs 0.25–0.7 ms whatever the size (more than a
#: 10^5-element mse_loss's forward and backward), so every small call with a ``grad_output`` would pay it to
#: spare a refused call a forward that costs less; 32 KB of nt_xent_loss's rows build 64M elements.
SHAPE_FIRST_ELEMENTS = 1 << 20


def _output_shape(binding: Binding, tensors: Mapping[str, torch.Tensor]) -> tuple[int, ...] | None:
    """The shape of the bound loss's output, from its inputs' shapes and dtypes alone: its function run on meta
    tensors (torch's own shape rules; no data, nothing allocated), its warnings discarded. ``None`` where that
    cannot tell: a loss that reads its inputs' values (a class-index range, an ``.item()``), one that raises, and
    a plugin's (the operator's code runs once a call).

    >>> from lossd.server.losses import REGISTRY
    >>> b, t = bind(REGISTRY, "mse", {"y_pred": torch.zeros(10**6, 3), "y_true": torch.zeros(3)}, {"reduction": "none"})
    >>> _output_shape(b, t)
    (1000000, 3)
    """
    spec = binding.spec
    if spec.plugin:
        return None
    meta = {k: torch.empty(t.shape, dtype=t.dtype, device="meta") for k, t in tensors.items()}
    inputs: dict[str, Any] = {i.name: None for i in spec.inputs}
    inputs.update(meta)
    inputs.update(param_copies(binding.scalars))
    try:
        with capture(), torch.no_grad():
            out = spec.fn(**inputs, **param_copies(binding.kwargs))
    except Exception:  # the forward itself then says what is wrong, in its own words
        return None
    return tuple(out.shape) if isinstance(out, torch.Tensor) else None


def _check_grad_output_shape(grad_output: torch.Tensor, shape: Sequence[int] | None) -> None:
    """Refuse ``grad_output`` unless it has ``shape``, the loss's (``None``: not known yet, nothing refused)."""
    if shape is not None and tuple(grad_output.shape) != tuple(shape):
        raise FieldError("grad_output", f"has shape {list(grad_output.shape)}; the loss has shape {list(shape)}")


def _grad_output(out: torch.Tensor, grad_output: torch.Tensor | None) -> torch.Tensor:
    if grad_output is None:
        return torch.ones_like(out)
    _check_grad_output_shape(grad_output, out.shape)
    if not has_grad(grad_output):
        raise FieldError("grad_output", "must have a floating-point or complex dtype")
    if grad_output.is_complex() and not out.is_complex():
        raise FieldError("grad_output", f"is complex; the loss is {WIRE_NAMES.get(out.dtype, str(out.dtype))}")
    return grad_output.to(device=out.device, dtype=out.dtype)
