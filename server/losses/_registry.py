"""The loss registry: one entry per loss, with its inputs, parameters and rules.

Registering a loss is one decorator. The function receives its input tensors
by canonical name (``None`` for an absent optional input) and its parameters,
already coerced to their declared types, as keyword arguments::

    >>> import torch
    >>> @register_loss(
    ...     "my_abs_loss",
    ...     inputs=(Input("input", "prediction", differentiable=True),
    ...             Input("target", "target")),
    ...     params=(REDUCTION,),
    ...     description="Mean absolute error, hand-written.",
    ...     example=lambda dt: {"input": torch.tensor([1.0, 2.0], dtype=dt),
    ...                         "target": torch.tensor([0.0, 0.0], dtype=dt)},
    ...     registry=Registry(),
    ... )
    ... def my_abs_loss(input, target, *, reduction):
    ...     return reduce((input - target).abs(), reduction)

The function validates what torch does not (with :func:`require`) and then
calls torch. Everything the registry knows is published by ``ListLosses``.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import heapq
import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch

from ..._wire import MAX_LOSS_WORK, FieldError  # MAX_LOSS_WORK: --max-loss-work's default

__all__ = [
    "Domain",
    "DomainWarning",
    "Equivalent",
    "MAX_LOSS_WORK",
    "Work",
    "broadcast_elements",
    "Input",
    "InputRole",
    "MeanNormalizer",
    "Param",
    "LossSpec",
    "Registry",
    "REGISTRY",
    "REDUCTION",
    "LossError",
    "check_signature",
    "register_loss",
    "register_split_name",
    "require",
    "require_class_indices",
    "class_indices",
    "in_unit_interval",
    "require_unit_target",
    "require_finite",
    "require_same_shape",
    "require_unit_interval",
    "reduce",
    "param_bound",
    "same_shape",
    "unit_interval",
    "strictness",
    "HALF_DTYPES",
    "narrowed", "widened",
]

ParamType = Literal["float", "int", "bool", "string", "int_list", "float_list", "object"]
InputKind = Literal["float", "int", "float|int"]
#: What an input is to its loss; ListLosses and the docs publish it. Training reads two:
#: a training loss takes the model output as its first input, role ``prediction``, and one
#: ``target``. (Typed for loss authors; not checked at run time, so plugins may name others.)
InputRole = Literal[
    "prediction", "target", "class weight", "element weight", "positive-class weight", "variance",
    "anchor", "positive example", "negative example", "negatives", "input lengths", "target lengths",
    "first embedding", "second embedding", "first score", "second score", "first tensor", "second tensor",
    "projection weight", "projection bias", "head weight", "head bias", "tail projection weight",
    "tail output weight", "class distances", "auxiliary variable",
]
#: What ``reduction='mean'`` divides by: ``count``, the number of per-sample terms; ``weight``,
#: the total class weight of the samples kept (a ``weight`` input, a non-negative
#: ``ignore_index``), which differs from one shard of a batch to another.
MeanNormalizer = Literal["count", "weight"]


#: The error a loss raises for a refused field: the one field error type,
#: :class:`lossd._wire.FieldError`, by the name loss modules and operator plugins import.
LossError = FieldError


#: Floating dtypes with too few bits to count, sum or cancel in: losses that do so compute them in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when its dtype is one of :data:`HALF_DTYPES`, else ``t`` itself.

    >>> widened(torch.ones(1, dtype=torch.bfloat16)).dtype, widened(torch.ones(1, dtype=torch.float64)).dtype
    (torch.float32, torch.float64)
    """
    return t.float() if t.dtype in HALF_DTYPES else t


def narrowed(loss: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``loss`` (computed on :func:`widened` tensors) cast back to ``dtype`` when that is one of
    :data:`HALF_DTYPES`, else ``loss`` itself.

    >>> narrowed(torch.ones(1), torch.float16).dtype, narrowed(torch.ones(1), torch.int64).dtype
    (torch.float16, torch.float32)
    """
    return loss.to(dtype) if dtype in HALF_DTYPES else loss


def require(condition: bool | torch.Tensor, field: str, message: str) -> None:
    """Raise :class:`FieldError` for ``field`` with ``message`` unless ``condition``.

    >>> require(1 > 0, "params.margin", "must be positive")
    """
    if not bool(condition):
        raise FieldError(field, message)


def require_same_shape(
    input: torch.Tensor, target: torch.Tensor, why: str = "torch would broadcast them silently",
    field: str = "inputs.target",
) -> None:
    """``target`` (named by ``field``) must have ``input``'s shape; ``why`` says what torch would do.

    >>> require_same_shape(torch.zeros(2), torch.zeros(2))
    """
    require(target.shape == input.shape, field,
            f"must have the same shape as input: got {list(target.shape)} for input {list(input.shape)} ({why})")


def same_shape(field: str = "inputs.target", torch_warns: bool = True) -> Domain:
    """The (a) rule "``field`` has the input's shape": torch broadcasts (and warns, for most losses)."""
    return Domain(field, "the input's shape", "torch broadcasts them" + (" and warns" if torch_warns else ""),
                  torch_warns)


def param_bound(name: str, rule: str, outside: str) -> Domain:
    """The (a) rule on a parameter torch documents a bound for but computes beyond it
    (``param_bound("eps", "eps >= 0", ...)``); the loss checks it, torch computes as it is."""
    return Domain(f"params.{name}", rule, outside)


def unit_interval(field: str = "inputs.target", what: str = "values") -> Domain:
    """The (a) rule "``field`` lies in [0, 1]": the formula is defined outside it."""
    return Domain(field, f"{what} lie in [0, 1]", "other values enter torch's formula as they are")


def in_unit_interval(tensor: torch.Tensor) -> bool:
    """Whether every element lies in [0, 1] (NaN does not); a complex one's imaginary parts must be 0 (torch
    computes some losses with complex targets, and orders no complex numbers: ``>=`` raised).

    >>> in_unit_interval(torch.tensor([0.0, 1.0])), in_unit_interval(torch.tensor([1 + 0j, 0.5j]))
    (True, False)
    """
    if tensor.is_complex():
        return bool((tensor.imag == 0).all()) and in_unit_interval(tensor.real)
    return bool(((tensor >= 0) & (tensor <= 1)).all())


def class_indices(target: torch.Tensor, field: str = "inputs.target") -> torch.Tensor:
    """A target of class indices as torch takes them (int64), from any integer dtype; a complex or bool one is
    refused, as torch refuses it (a cast would drop the imaginary part, and read True as class 1).

    >>> class_indices(torch.tensor([1, 0], dtype=torch.int16)).dtype
    torch.int64
    >>> class_indices(torch.tensor([True, False]))
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: inputs.target: class indices must have an integer dtype, got bool
    """
    if target.is_complex() or target.dtype == torch.bool:  # (the message built only then: every call passes here)
        raise FieldError(field, "class indices must have an integer dtype, got "
                         + str(target.dtype).removeprefix("torch."))
    return target.to(torch.int64)


def require_unit_interval(tensor: torch.Tensor, field: str, what: str = "values") -> None:
    """Every element in [0, 1] (probabilities, soft labels); NaN fails too."""
    require(bool(((tensor >= 0) & (tensor <= 1)).all()), field, f"{what} must lie in [0, 1] (NaN is refused)")


def require_unit_target(target: torch.Tensor, what: str, field: str = "inputs.target") -> None:
    """A target shaped like the input (a mask, one-hot or probabilities): a float one's values lie in [0, 1]
    (NaN is refused), an integer one's are 0 or 1 (it is ``what``: "one-hot", "a mask or one-hot").

    >>> require_unit_target(torch.tensor([0, 2]), "one-hot")
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: inputs.target: an integer target shaped like input is one-hot: its values must be 0 or 1
    """
    if target.is_floating_point():
        require_unit_interval(target, field)
    else:
        require(bool(((target >= 0) & (target <= 1)).all()), field,
                f"an integer target shaped like input is {what}: its values must be 0 or 1")


def require_class_indices(
    target: torch.Tensor, n_classes: int, ignore_index: int | None = None, field: str = "inputs.target"
) -> None:
    """Class-index targets must lie in [0, n_classes) or equal ``ignore_index`` (torch does not always check).

    >>> require_class_indices(torch.tensor([0, 2, -100]), 3, ignore_index=-100)
    """
    valid = (target >= 0) & (target < n_classes)
    if ignore_index is not None:
        valid |= target == ignore_index
    also = f" or equal ignore_index ({ignore_index})" if ignore_index is not None else ""
    require(valid.all(), field, f"class indices must lie in [0, {n_classes}){also}")


def require_finite(tensor: torch.Tensor, field: str) -> None:
    """Refuse NaN or infinite elements in ``tensor`` (torch silently drops some)."""
    if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise FieldError(field, "contains NaN or infinite values; they must be finite")


class DomainWarning(UserWarning):
    """An input outside a loss's documented domain that torch computes anyway (a :class:`Domain` rule)."""


#: Whether the request being evaluated is ``strict`` (set by :func:`strictness`).
_STRICT: contextvars.ContextVar[bool] = contextvars.ContextVar("lossd_strict", default=False)


@contextlib.contextmanager
def strictness(strict: bool) -> Iterator[None]:
    """Evaluate the block with :class:`Domain` rules refusing (``strict``) or warning."""
    token = _STRICT.set(strict)
    try:
        yield
    finally:
        _STRICT.reset(token)


@dataclass(frozen=True)
class Domain:
    """A rule of kind (a): torch documents a domain but computes outside it, well defined.

    Outside the domain the loss is computed as torch computes it, with a
    :class:`DomainWarning` naming the field and the domain; a ``strict``
    request is refused instead (INVALID_ARGUMENT). ``torch_warns``: torch
    raises its own warning for this case (target-size broadcasting), so lossd
    adds none. Rules of kind (b) (torch would crash, read out of bounds, hang
    or return a meaningless number) are :func:`require` calls, listed in the
    loss's ``refuses``.

    >>> SIGNS = Domain("inputs.target", "values are 1 or -1", "any other value enters the formula as it is")
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     SIGNS.check(torch.tensor([1.0, 0.5]).abs().eq(1).all())
    >>> str(seen[0].message)
    'inputs.target: values are 1 or -1 (the documented domain); any other value enters the formula as it is'
    """

    field: str
    rule: str
    outside: str
    torch_warns: bool = False

    def describe(self) -> str:
        """The rule as docs/losses.md lists it."""
        return f"`{self.field}`: {self.rule} ({self.outside})"

    def check(self, ok: bool | torch.Tensor) -> None:
        """Warn (or, for a strict request, refuse) unless ``ok``."""
        if bool(ok):
            return
        if _STRICT.get():
            raise FieldError(self.field, f"{self.rule} (the documented domain); this strict request refuses "
                                        f"other values ({self.outside}; without strict: computed, with a warning)")
        if not self.torch_warns:
            warnings.warn(f"{self.field}: {self.rule} (the documented domain); {self.outside}", DomainWarning,
                          stacklevel=2)


@dataclass(frozen=True)
class Param:
    """One loss parameter: its type, default, allowed values and doc."""

    name: str
    type: ParamType
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    nullable: bool = False
    #: A float that may be +-Infinity where torch takes it (a norm degree: ``p=inf`` is the max norm).
    #: Only such a parameter lets an infinite number through ``params`` (server/rpc/_request.py,
    #: ``struct_to_dict``); NaN is refused for every parameter.
    infinite: bool = False

    def check(self) -> None:
        """Refuse (``ValueError``) a declaration that a request could not meet or ``ListLosses`` could not
        publish: a type that is no :data:`ParamType`, or a default (other than ``None``) that the param's own
        :meth:`coerce` refuses — of the wrong type, outside its choices or range, NaN, a tensor — or an infinite
        one where the param does not take infinity; ``choices`` on a param that is not a string, a range on one
        that is not a number, or a range no value is in. :meth:`Registry.add` checks every param it is given.

        >>> Param("eps", "float", -1.0, "", min=0.0).check()
        Traceback (most recent call last):
        ...
        ValueError: param 'eps': default -1.0 is refused: params.eps: is -1.0; must be >= 0
        """
        if self.type not in get_args(ParamType):
            raise ValueError(f"param {self.name!r}: type {self.type!r} is not one of {list(get_args(ParamType))}")
        if self.choices and self.type != "string":  # coerce reads choices of a string only: others went unchecked
            raise ValueError(f"param {self.name!r}: choices are for a string param, not a {self.type}")
        if (self.min is not None or self.max is not None) and self.type not in _NUMERIC:
            raise ValueError(f"param {self.name!r}: a range (min, max) is for numbers, not a {self.type}")
        if self.min is not None and self.max is not None and (
                self.min > self.max or (self.min == self.max and (self.min_exclusive or self.max_exclusive))):
            raise ValueError(f"param {self.name!r}: the range {self.range_text()} holds no value")
        if self.default is None:
            return
        try:
            self.coerce(self.default)
        except FieldError as e:
            raise ValueError(f"param {self.name!r}: default {self.default!r} is refused: {e}") from None
        numbers = self.default if self.type.endswith("_list") else [self.default]
        if not self.infinite and self.type in ("float", "float_list") and any(math.isinf(x) for x in numbers):
            raise ValueError(f"param {self.name!r}: default {self.default!r} is infinite; declare infinite=True")

    def range_text(self) -> str:
        """The allowed range as people write it, e.g. ``[0, 1]`` or ``> 0``."""
        lo, hi = self.min, self.max
        if lo is None and hi is None:
            return ""
        if lo is not None and hi is not None:
            return f"{'(' if self.min_exclusive else '['}{_num(lo)}, {_num(hi)}{')' if self.max_exclusive else ']'}"
        if lo is not None:
            return f"{'>' if self.min_exclusive else '>='} {_num(lo)}"
        assert hi is not None
        return f"{'<' if self.max_exclusive else '<='} {_num(hi)}"

    def describe(self) -> str:
        """``name (type)``, for error messages that list valid parameters."""
        extra = f" one of {list(self.choices)}" if self.choices else ""
        rng = f" {self._within()}" if self.range_text() else ""
        return f"{self.name} ({self.type}{extra}{rng})"

    def _within(self) -> str:
        """``in [0, 1]`` for an interval, ``> 0`` for a half-line."""
        text = self.range_text()
        return f"in {text}" if text[:1] in "[(" else text

    def coerce(self, value: Any) -> Any:
        """Check a value decoded from ``google.protobuf.Struct`` and give it its type."""
        field_name = f"params.{self.name}"
        if value is None:
            if self.nullable:
                return None
            raise FieldError(field_name, f"must be a {self.type}, not null")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise FieldError(field_name, f"must be true or false, got {value!r}")
            return value
        if self.type == "object":  # a JSON object; the loss checks its keys
            if not isinstance(value, dict):
                raise FieldError(field_name, f"must be an object (a JSON map), got {value!r}")
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise FieldError(field_name, f"must be a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise FieldError(field_name, f"is {value!r}; must be one of {list(self.choices)}")
            return value
        if self.type in ("int_list", "float_list"):
            integral = self.type == "int_list"
            if not isinstance(value, (list, tuple)) or not value:
                kind = "integers" if integral else "numbers"
                raise FieldError(field_name, f"must be a non-empty list of {kind}, got {value!r}")
            return [self._number(v, f"{field_name}[{i}]", integral) for i, v in enumerate(value)]
        return self._number(value, field_name, integral=self.type == "int")

    def _number(self, value: Any, field_name: str, integral: bool) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if integral else "a number"
            raise FieldError(field_name, f"must be {kind}, got {value!r}")
        if integral:
            if not float(value).is_integer():
                raise FieldError(field_name, f"must be an integer, got {value!r}")
            number: int | float = int(value)
            if not -(2**63) <= number < 2**63:  # torch takes int64 (1e20 overflowed inside the loss: INTERNAL)
                raise FieldError(field_name, f"is {value!r}; must fit in a 64-bit integer")
        else:
            number = float(value)
            if math.isnan(number):
                raise FieldError(field_name, "must be a number, got NaN")
        lo, hi = self.min, self.max
        if (lo is not None and (number < lo or (self.min_exclusive and number == lo))) or (
            hi is not None and (number > hi or (self.max_exclusive and number == hi))
        ):
            raise FieldError(field_name, f"is {value!r}; must be {self._within()}")
        return number


#: The floating-point dtypes a loss takes unless it declares fewer (``LossSpec.float_dtypes``).
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
#: The param types a range (``min``, ``max``) applies to: :meth:`Param.coerce` checks each number against it.
_NUMERIC = ("int", "float", "int_list", "float_list")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Input:
    """One input tensor of a loss.

    ``kind`` is the dtype kind accepted: ``float`` (must be floating point),
    ``int`` (class indices, lengths: any integer dtype, passed to the loss
    as int64) or ``float|int``. A ``float`` input also takes integer, bool and
    complex tensors: torch decides (type promotion), and refuses what it cannot
    compute. ``scalar``: the Python form torch also takes for this input
    (``"float"`` for gaussian_nll_loss's ``var``, ``"int_list"`` for CTC
    lengths), sent as a parameter of the same name and passed to torch as it is.
    """

    name: str
    role: InputRole
    kind: InputKind = "float"
    differentiable: bool = False
    required: bool = True
    aliases: tuple[str, ...] = ()
    doc: str = ""
    scalar: ParamType | None = None

    def scalar_param(self) -> Param:
        """The parameter that carries this input's Python form (see ``scalar``)."""
        assert self.scalar is not None
        return Param(self.name, self.scalar, None, self.doc)


#: The ``reduction`` parameter shared by most torch losses.
REDUCTION = Param(
    "reduction",
    "string",
    "mean",
    "How to reduce the per-element losses: 'none', 'mean' or 'sum'.",
    choices=("none", "mean", "sum"),
)


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a torch-style ``reduction`` to per-element losses."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


Example = Callable[[torch.dtype], Mapping[str, Any]]


@dataclass(frozen=True)
class Equivalent:
    """A library call and the lossd params that give the same numbers (a row of the docs' table).

    ``call`` is the library's class or function with its arguments, as a user writes it;
    ``params`` the lossd request's ``params``; ``note`` what else to send (inputs, shapes).
    ``tests/support/refs/libraries.py`` checks every row, against the library where it installs.

    >>> Equivalent("kornia.losses.dice_loss(pred, target, eps=1e-8)", {"mode": "multiclass"}).params
    {'mode': 'multiclass'}
    """

    call: str
    params: Mapping[str, Any]
    note: str = ""


@dataclass(frozen=True)
class Work:
    """The largest tensor a loss builds, where it grows faster than its inputs: ``what`` names it (for the
    refusal and the docs), ``field`` is the input whose size drives it, and ``elements`` counts it from the
    bound inputs by canonical name (tensors, or an input's Python form; absent optional ones missing) and the
    bound params. Its result for inputs the loss refuses does not matter: they are refused anyway.

    >>> work = Work("the (2N)² similarities", "inputs.input", lambda t, p: (2 * t["input"].shape[0]) ** 2)
    >>> work.elements({"input": torch.zeros(4, 8)}, {})
    64
    """

    what: str
    field: str
    elements: Callable[[Mapping[str, Any], Mapping[str, Any]], int]


def broadcast_elements(shapes: Sequence[Sequence[int]]) -> int:
    """The elements of ``shapes`` broadcast together (torch's and numpy's rule), or of the largest when they
    do not broadcast (a loss that takes such inputs does not combine them elementwise).

    >>> broadcast_elements([(1, 4000), (4000, 1)]), broadcast_elements([(8, 10), (8,)]), broadcast_elements([(3,), ()])
    (16000000, 80, 3)
    """
    elements = 1
    for k in range(1, max(map(len, shapes), default=0) + 1):
        sizes = {shape[-k] for shape in shapes if len(shape) >= k} - {1}
        if len(sizes) > 1:
            return max(math.prod(shape) for shape in shapes)
        elements *= sizes.pop() if sizes else 1
    return elements


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: everything ``ListLosses`` publishes, plus the function."""

    name: str
    fn: Callable[..., torch.Tensor]
    inputs: tuple[Input, ...]
    params: tuple[Param, ...]
    description: str
    example: Example
    aliases: tuple[str, ...] = ()
    source: str = ""
    notes: str = ""
    float_dtypes: tuple[str, ...] = FLOAT_DTYPES
    equivalents: tuple[Equivalent, ...] = ()
    #: The value on a batch is not a mean or sum of per-sample terms, whatever the reduction
    #: (in-batch negatives): data-parallel training refuses it.
    batch_coupled: bool = False
    #: What ``reduction='mean'`` divides by (:data:`MeanNormalizer`); data-parallel training
    #: refuses ``weight`` with class weights or an ignore_index.
    mean_normalizer: MeanNormalizer = "count"
    #: Rules of kind (a): computed with a warning, refused when strict.
    domain: tuple[Domain, ...] = ()
    #: Rules of kind (b), as docs/losses.md lists them: always refused.
    refuses: tuple[str, ...] = ()
    #: Elementwise in its inputs and reduced by a plain mean or sum: items of a batch that share
    #: params, dtypes and shapes run as one call (EvaluateLossBatch, server/evaluation/_vectorized.py),
    #: bit-identical to one at a time (tests/unit/test_vectorized.py proves it per loss).
    vectorized: bool = False
    #: torch's functional takes the deprecated ``size_average`` and ``reduce``: they become
    #: ``reduction`` as torch makes them (server/evaluation/_binding.py, ``legacy_reduction``);
    #: every other loss refuses them, as torch raises a TypeError for a functional without them.
    #: tests/unit/test_torch_acceptance.py checks it against torch's signatures.
    legacy_reduction: bool = False
    #: A small request of it may be evaluated on the event loop (server/rpc/_service.py). The plugin loader
    #: sets False for an operator plugin's losses: their cost is unknown, and one that sleeps or waits on
    #: I/O takes no CPU, so the rule that moves a slow loss off the loop would never see it.
    inline: bool = True
    #: The largest tensor the loss builds, where it grows faster than the inputs (a similarity matrix, a
    #: lattice): counted before the loss runs, refused past the server's ``--max-loss-work`` (default
    #: :data:`MAX_LOSS_WORK`; ``check_work``), and such a loss is never evaluated on the event loop
    #: (server/rpc/_service.py).
    work: Work | None = None
    #: The inputs torch combines elementwise, broadcasting them (``mse_loss``'s input, target and weight): what
    #: they broadcast to is built and counted too (``check_work``: [1, N] and [N, 1] are N² elements).
    broadcasts: tuple[str, ...] = ()
    #: An operator plugin's loss (set by the plugin loader): its own code's mistakes (a TypeError, a
    #: ZeroDivisionError, writing to its inputs, an output with no gradient) are internal errors, logged,
    #: not the client's (server/evaluation/_evaluate.py, ``call_loss``).
    plugin: bool = False
    _by_input: dict[str, Input] = field(default_factory=dict, compare=False, repr=False)
    #: A param or an input's Python form may be a list or an object (a dict), which the loss could change:
    #: each evaluation then gets its own copies (server/evaluation/_evaluate.py, ``Binding.fresh``).
    mutable_values: bool = field(default=False, init=False, compare=False, repr=False)
    #: A loss lossd defines (not torch's, not a plugin's): its float params enter its tensor arithmetic, so a value
    #: beyond the inputs' dtype (``smooth=1e39`` on float32) is refused rather than turning the loss into NaN
    #: (server/evaluation/_evaluate.py, ``check_param_range``). Names of its ``float`` and ``float_list`` params, but
    #: those that take infinity (a norm degree).
    ranged_params: tuple[str, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for i in self.inputs:
            self._by_input[i.name] = i
            for a in i.aliases:
                self._by_input[a] = i
        kinds = {p.type for p in self.params} | {i.scalar for i in self.inputs}
        object.__setattr__(self, "mutable_values", bool(kinds & {"int_list", "float_list", "object"}))
        if not self.plugin and not self.source.startswith("torch."):
            ranged = tuple(p.name for p in self.params if p.type in ("float", "float_list") and not p.infinite)
            object.__setattr__(self, "ranged_params", ranged)

    def input(self, name: str) -> Input | None:
        """The input called ``name`` (canonical or alias), or ``None``."""
        return self._by_input.get(name)

    def param(self, name: str) -> Param | None:
        """The parameter called ``name``, or ``None``."""
        return next((p for p in self.params if p.name == name), None)

    def example_inputs(self, dtype: torch.dtype = torch.float64) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The example's tensors and params, split; floats in ``dtype``."""
        ex = dict(self.example(dtype))
        params = ex.pop("params", {})
        return ex, params


class Registry:
    """Losses by canonical name and alias. Aliases are case-insensitive."""

    def __init__(self) -> None:
        self._specs: dict[str, LossSpec] = {}
        self._names: dict[str, str] = {}
        self._split: dict[str, str] = {}
        self._hints: dict[str, tuple[str, ...]] = {}  # "did you mean" by unknown key (see _close_names)
        self._bigrams: dict[str, frozenset[str]] = {}  # of every name, made when a hint is first needed

    def add_split_name(self, name: str, why: str) -> None:
        """Refuse ``name`` as an alias because the field uses it for different losses; ``why`` names them."""
        key = _key(name)
        if not key:
            raise ValueError(f"loss name {name!r} is empty once normalised")
        if key in self._names:
            raise ValueError(f"loss name {name!r} is already registered (by {self._names[key]!r})")
        self._split[key] = why

    def add(self, spec: LossSpec) -> LossSpec:
        """Add ``spec``; a name or alias that is already taken, or empty once normalised (``"torch.nn."``, which
        would take ``loss=""``), is refused, and so is a param :meth:`Param.check` refuses, and a name that
        two params, two inputs (names and aliases), or a param and an input with a Python form (sent in ``params``
        too) share: a request could not tell which it meant."""
        for p in spec.params:
            try:
                p.check()
            except ValueError as e:
                raise ValueError(f"loss {spec.name!r}: {e}") from None
        for namespace in ([(f"param {p.name!r}", (p.name,)) for p in spec.params]
                          + [(f"input {i.name!r}", (i.name, *i.aliases)) for i in spec.inputs if i.scalar],
                          [(f"input {i.name!r}", (i.name, *i.aliases)) for i in spec.inputs]):
            declared: dict[str, int] = {}
            for k, (what, names) in enumerate(namespace):
                for n in names:
                    if declared.setdefault(n, k) != k:
                        raise ValueError(f"loss {spec.name!r}: {what} takes the name {n!r} of "
                                         f"{namespace[declared[n]][0]}")
        for n in (spec.name, *spec.aliases):
            key = _key(n)
            if not key:
                raise ValueError(f"loss name {n!r} is empty once normalised")
            if key in self._split:
                raise ValueError(f"loss name {n!r} is a split name ({self._split[key]})")
            if key in self._names:
                raise ValueError(f"loss name {n!r} is already registered (by {self._names[key]!r})")
        self._specs[spec.name] = spec
        for n in (spec.name, *spec.aliases):
            self._names[_key(n)] = spec.name
        self._hints, self._bigrams = {}, {}  # a new name may be closer (new dicts: a lookup in flight keeps its own)
        return spec

    def get(self, name: str) -> LossSpec:
        """The loss called ``name`` or one of its aliases.

        Raises :class:`FieldError` (NOT_FOUND) listing the closest names.
        """
        spec = self.find(name)
        if spec is None:
            if _key(name) in self._split:
                raise FieldError("loss", f"{name!r} means different losses or defaults in different libraries, so "
                                f"it is no alias: {self._split[_key(name)]} (ListLosses lists them all)", "NOT_FOUND")
            if not name:
                raise FieldError("loss", "is empty; name a loss (see ListLosses)")
            close = self._close_names(_key(name))
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise FieldError("loss", f"no loss named {name!r}{hint} (ListLosses lists them all)", "NOT_FOUND")
        return spec

    def find(self, name: str) -> LossSpec | None:
        """The loss called ``name`` or one of its aliases; ``None`` when unknown (no message is built: for
        a caller that only needs to know, such as the batch window's grouping).

        >>> REGISTRY.find("MSE").name, REGISTRY.find("no_such_loss")
        ('mse_loss', None)
        """
        canonical = self._names.get(_key(name))
        return None if canonical is None else self._specs[canonical]

    def _close_names(self, key: str) -> tuple[str, ...]:
        """The canonical names of at most four known names closest to the unknown ``key``, best first.

        An unknown name is refused on the event loop, and in a batch once per item: difflib over all
        231 names took up to 2.5 ms a name, 7.5 times the evaluation of a small valid batch item. So
        the answer is kept per key (at most :data:`KEPT_HINTS`, then forgotten all at once), and
        difflib's ratio is computed for a shortlist only (:func:`_close_matches`).
        """
        hint = self._hints.get(key)
        if hint is None:
            if len(self._hints) >= KEPT_HINTS:
                self._hints = {}
            if not self._bigrams:
                self._bigrams = {n: _bigrams(n) for n in self._names}
            close = _close_matches(key, self._bigrams)
            hint = self._hints[key] = tuple(dict.fromkeys(self._names[c] for c in close))
        return hint

    def canonical(self, name: str) -> str | None:
        """The canonical name of the loss called ``name`` or one of its aliases; ``None`` when unknown.

        >>> REGISTRY.canonical("MSE"), REGISTRY.canonical("no_such_loss")
        ('mse_loss', None)
        """
        return self._names.get(_key(name))

    def __iter__(self) -> Iterator[LossSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (_key(name) in self._names or _key(name) in self._split)


#: Unknown loss names whose "did you mean" answer a registry keeps.
KEPT_HINTS = 1024
#: Known names, those sharing the most bigrams with an unknown one, whose difflib ratio is computed.
HINT_SHORTLIST = 8


def _bigrams(text: str) -> frozenset[str]:
    """The pairs of adjacent characters in ``text`` (``text`` itself when shorter than two)."""
    return frozenset(text[i:i + 2] for i in range(len(text) - 1)) or frozenset((text,))


def _close_matches(word: str, bigrams: Mapping[str, frozenset[str]], shortlist: int = HINT_SHORTLIST,
                   n: int = 4, cutoff: float = 0.5) -> list[str]:
    """Like ``difflib.get_close_matches(word, bigrams, n, cutoff)``, best first, with difflib's ratio
    computed only for the ``shortlist`` names that share the largest part of their bigrams with ``word``
    (Jaccard index; ``bigrams`` maps each known name to its :func:`_bigrams`).

    >>> names = ["mse_loss", "l1_loss", "huber_loss", "cross_entropy"]
    >>> _close_matches("mse_los", {n: _bigrams(n) for n in names})
    ['mse_loss', 'huber_loss', 'l1_loss']
    """
    mine = _bigrams(word)

    def shared(name: str) -> float:
        common = len(mine & bigrams[name])
        return common / (len(mine) + len(bigrams[name]) - common)

    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)  # difflib caches details about the second sequence
    scored = []
    for name in heapq.nlargest(shortlist, bigrams, key=shared):
        matcher.set_seq1(name)
        if matcher.real_quick_ratio() < cutoff or matcher.quick_ratio() < cutoff:  # difflib's cheap upper bounds
            continue
        if (ratio := matcher.ratio()) >= cutoff:
            scored.append((ratio, name))
    return [name for _, name in heapq.nlargest(n, scored)]


def _key(name: str) -> str:
    key = name.strip().lower()
    for prefix in ("torch.nn.functional.", "torch.nn.", "nn.functional.", "nn.", "f."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


#: The registry the server uses.
REGISTRY = Registry()

# Where ``register_loss`` without an explicit registry adds entries: REGISTRY,
# except while a plugin loads (see ``staging``), so a plugin is taken whole or not at all.
_TARGET: contextvars.ContextVar[Registry] = contextvars.ContextVar("lossd_registry_target", default=REGISTRY)


@contextlib.contextmanager
def staging() -> Iterator[Registry]:
    """Collect the ``register_loss`` calls made inside the block into a fresh registry."""
    staged = Registry()
    token = _TARGET.set(staged)
    try:
        yield staged
    finally:
        _TARGET.reset(token)


def register_split_name(name: str, why: str, registry: Registry | None = None) -> None:
    """Make ``name`` a NOT_FOUND whose message says which lossd losses it may mean (``why``).

    For names the field uses for different losses (``FocalLoss``), or a library's name whose defaults give other
    numbers than the lossd loss's (``SSIMLoss``, ``BinaryFocalLossWithLogits``): no alias, a pointer.
    """
    (_TARGET.get() if registry is None else registry).add_split_name(name, why)


def _module_loss(cls: type, inputs: Sequence[Input], params: Sequence[Param]) -> Callable[..., torch.Tensor]:
    """Adapt an ``nn.Module`` loss class: params go to ``__init__``, inputs to ``forward`` in order."""

    def call(**kwargs: Any) -> torch.Tensor:
        module = cls(**{p.name: kwargs[p.name] for p in params})
        args = [kwargs[i.name] for i in inputs]
        while args and args[-1] is None:
            args.pop()  # absent trailing optional inputs use forward's defaults
        loss: torch.Tensor = module(*args)
        return loss

    call.__name__ = cls.__name__
    call.__doc__ = cls.__doc__
    call.__lossd_module__ = cls  # type: ignore[attr-defined]  # for check_signature
    return call


def check_signature(spec: LossSpec) -> None:
    """Raise ``TypeError`` when ``spec``'s function cannot take its declared inputs and params, as
    :func:`~lossd.server.evaluation.call_loss` passes them (every input by name, absent optional ones as
    ``None``; an ``nn.Module``: params to ``__init__``, the required inputs to ``forward`` in order).

    >>> import dataclasses
    >>> def f(input, target, *, reduction): ...
    >>> spec = LossSpec("f", f, (Input("input", ""), Input("target", "")), (REDUCTION,), "", lambda dt: {})
    >>> check_signature(spec)
    >>> check_signature(dataclasses.replace(spec, params=(REDUCTION, Param("alpha", "float", 1.0, ""))))
    Traceback (most recent call last):
    ...
    TypeError: loss f: its function does not take the declared inputs and params: got an unexpected keyword ...
    """
    params = {p.name: p.default for p in spec.params}
    cls = getattr(spec.fn, "__lossd_module__", None)
    try:
        if cls is None:
            inspect.signature(spec.fn).bind(**{i.name: None for i in spec.inputs}, **params)
        else:  # forward gets the inputs in order up to the last one given: at least up to the last required
            last = max((k for k, i in enumerate(spec.inputs) if i.required), default=-1)
            inspect.signature(cls).bind(**params)
            inspect.signature(cls.forward).bind(None, *[None] * (last + 1))
    except ValueError:  # no signature to read (a C function: F.cosine_similarity): called as it is
        return
    except TypeError as e:
        raise TypeError(f"loss {spec.name}: its function does not take the declared inputs and params: "
                        f"{e}") from None


def register_loss(
    name: str,
    *,
    inputs: Sequence[Input],
    params: Sequence[Param] = (),
    description: str,
    example: Example,
    aliases: Sequence[str] = (),
    source: str = "",
    notes: str = "",
    float_dtypes: Sequence[str] = FLOAT_DTYPES,
    equivalents: Sequence[Equivalent] = (),
    batch_coupled: bool = False,
    mean_normalizer: MeanNormalizer = "count",
    domain: Sequence[Domain] = (),
    refuses: Sequence[str] = (),
    vectorized: bool = False,
    legacy_reduction: bool = False,
    work: Work | None = None,
    broadcasts: Sequence[str] = (),
    registry: Registry | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator that registers a loss function under ``name``.

    ``example`` maps a float dtype to a small valid call (input tensors by name,
    plus an optional ``"params"`` dict); it feeds the docs and the test suite.
    ``equivalents`` lists library calls that give the same numbers (the docs' table).
    Two facts data-parallel training needs (a loss that gets them wrong trains
    another objective with ``world_size > 1``): ``batch_coupled`` — the loss of
    a batch is not a mean or sum of per-sample terms (in-batch negatives);
    ``mean_normalizer`` — ``"weight"`` when ``reduction='mean'`` divides by the
    kept samples' total class weight rather than their count. ``vectorized``: the loss
    is elementwise and reduced by a plain mean or sum, so a batch of same-shaped items
    may run as one call (only once tests/unit/test_vectorized.py proves it bit-identical).
    ``legacy_reduction``: the torch functional takes the deprecated ``size_average`` and
    ``reduce`` (elsewhere they are refused, as torch refuses them). ``work``: the
    :class:`Work` of a loss that builds a tensor larger than its inputs (pairwise similarities);
    ``broadcasts``: the inputs it combines elementwise with torch's broadcasting.
    The decorated object is a function ``(inputs..., *, params...) -> Tensor``
    or an ``nn.Module`` subclass (params to ``__init__``, inputs to ``forward``);
    it is returned unchanged. ``domain`` lists the loss's rules of kind (a)
    (:class:`Domain`: computed as torch does, with a warning; refused when the
    request is strict) and ``refuses`` those of kind (b) (always refused), for
    the docs.
    """

    def decorate(fn: Any) -> Any:
        is_module = inspect.isclass(fn) and issubclass(fn, torch.nn.Module)
        spec = LossSpec(
            name=name,
            fn=_module_loss(fn, inputs, params) if is_module else fn,
            inputs=tuple(inputs),
            params=tuple(params),
            description=description,
            example=example,
            aliases=tuple(aliases),
            source=source,
            notes=notes,
            float_dtypes=tuple(float_dtypes),
            equivalents=tuple(equivalents),
            batch_coupled=batch_coupled,
            mean_normalizer=mean_normalizer,
            domain=tuple(domain),
            refuses=tuple(refuses),
            vectorized=vectorized,
            legacy_reduction=legacy_reduction,
            work=work,
            broadcasts=tuple(broadcasts),
        )
        (_TARGET.get() if registry is None else registry).add(spec)
        return fn

    return decorate
