"""Composite and regularized objectives: Objective = sum_i w_i * loss_i + L1 + L2.

The seed's convention: ``objective = loss + l1 * sum|theta| + 0.5 * l2 * sum theta^2``
over the covered parameters, so the L2 gradient ``l2 * theta`` is exactly what
``torch.optim.SGD(weight_decay=l2)`` adds::

    >>> import torch
    >>> from lossd.server.losses import REGISTRY
    >>> r = evaluate_objective(
    ...     REGISTRY, [Term("mse")], {"y_pred": torch.tensor([1.0]), "y_true": torch.tensor([0.0])},
    ...     parameters={"fc.weight": torch.tensor([[2.0]])}, regularization=Regularization(l2=0.5), plain=True)
    >>> r.parts, r.parameter_grads["fc.weight"].tolist()
    ({'loss': 1.0, 'l2': 1.0}, [[1.0]])
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..._wire import MAX_LOSS_WORK, FieldError
from ..losses import LossSpec, Registry, strictness
from ._binding import (
    DEPRECATED_PARAMS,
    bind_inputs,
    bind_params,
    check_work,
    has_grad,
    legacy_reduction,
    split_scalars,
)
from ._evaluate import Evaluation, call_backward, call_loss, no_gradient
from ._warnings import capture

__all__ = [
    "MAX_PATTERNS", "MAX_PATTERN_CHARS", "TRANSFORMS", "Regularization", "Term", "add_penalties", "check_patterns",
    "covered_parameters", "evaluate_objective", "glob_matcher",
]

#: Most glob patterns in ``regularization.include`` (and in ``exclude``): each is matched against
#: every parameter name, so the count bounds the work of a small request.
MAX_PATTERNS = 256
#: Most characters of glob patterns in one request, all of them together (``regularization``'s include
#: and exclude; a training job's ``param_groups`` too): each distinct pattern is compiled before it is
#: matched (about 10 ms for a crafted 1 KiB one; 16 KiB of them took a pool thread for seconds), while
#: real patterns are a few dozen characters.
MAX_PATTERN_CHARS = 16 * 1024


def glob_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Whether a name matches any of ``patterns`` (``fnmatch.fnmatchcase``'s rules), each compiled through
    a cache of 512 patterns, not fnmatch's (which keeps 32,768 for the process's life: crafted ones are
    30 KB each).

    >>> weights = glob_matcher(["*.weight", "fc[!1]*"])
    >>> weights("fc1.weight"), weights("fc1.bias"), weights("fc2.bias")
    (True, False, True)
    """
    compiled = [_compiled_glob(p) for p in patterns]
    return lambda name: any(c.match(name) is not None for c in compiled)


@functools.lru_cache(maxsize=512)
def _compiled_glob(pattern: str) -> re.Pattern[str]:
    """``pattern`` translated and compiled once (the same few patterns come with every call of a client);
    at most 512 kept, at most 30 KB each (a crafted 1 KiB pattern)."""
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True)
class Term:
    """One weighted loss of an objective; ``name`` labels it in ``parts``.

    ``inputs`` maps the loss's input names to the request inputs they read (others read
    the request input of the same name or alias); ``transforms`` maps a loss input to one
    of :data:`TRANSFORMS`, applied to what it reads. MONAI's DiceFocal with a class-index
    target, for instance: ``Term("dice_loss", params={"mode": "multiclass"})`` and
    ``Term("sigmoid_focal_loss", transforms={"target": "one_hot"})``.
    """

    loss: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)
    transforms: Mapping[str, str] = field(default_factory=dict)


#: What a term may do to an input before its loss sees it.
TRANSFORMS = ("softmax", "log_softmax", "sigmoid", "one_hot")


@dataclass(frozen=True)
class Regularization:
    """L1/L2 coefficients and which parameters they cover (see :func:`covered_parameters`)."""

    l1: float = 0.0
    l2: float = 0.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def covered_parameters(parameters: Mapping[str, torch.Tensor], reg: Regularization) -> list[str]:
    """Names the regularization applies to, sorted.

    With ``include`` empty: every parameter except those matching ``exclude``;
    when ``exclude`` is empty too, except biases (names ending in ``bias``) and
    tensors with fewer than 2 dims. With ``include``: the matches, minus ``exclude``.

    >>> covered_parameters({"fc.weight": torch.ones(2, 2), "fc.bias": torch.ones(2)}, Regularization(l2=1))
    ['fc.weight']
    """

    included, excluded = glob_matcher(reg.include), glob_matcher(reg.exclude)
    names = []
    for name, t in parameters.items():
        if reg.include:
            keep = included(name) and not excluded(name)
        elif reg.exclude:
            keep = not excluded(name)
        else:
            keep = not name.endswith("bias") and t.dim() >= 2
        if keep:
            names.append(name)
    return sorted(names)


def add_penalties(
    objective: torch.Tensor, covered: Sequence[torch.Tensor], reg: Regularization, parts: dict[str, float]
) -> torch.Tensor:
    """``objective + l1 * sum|theta| + 0.5 * l2 * sum theta^2`` over ``covered``: the one place
    for the L1/L2 convention (EvaluateLoss objectives and training steps). Each penalty that is
    on is recorded in ``parts`` (``"l1"``, ``"l2"``). Sums run tensor by tensor, in order;
    a caller that wants one sum over every entry passes one flattened tensor.

    >>> parts = {}
    >>> add_penalties(torch.tensor(1.0), [torch.tensor([1.0, -2.0])], Regularization(l1=0.5, l2=1.0), parts)
    tensor(5.)
    >>> parts
    {'l1': 1.5, 'l2': 2.5}
    """
    if reg.l1:
        l1 = reg.l1 * sum(t.abs().sum() for t in covered)
        parts["l1"] = float(torch.as_tensor(l1).detach())  # float() of a graph tensor warns
        objective = objective + l1
    if reg.l2:
        l2 = 0.5 * reg.l2 * sum(t.pow(2).sum() for t in covered)
        parts["l2"] = float(torch.as_tensor(l2).detach())
        objective = objective + l2
    return objective


#: The objective's own parts (the data loss, the penalties): no term may be called so.
RESERVED_PARTS = frozenset({"loss", "l1", "l2"})


def _term_names(terms: Sequence[Term], specs: Sequence[LossSpec]) -> list[str]:
    """Each term's part name: its own ``name``, else its loss's (``<loss>#2``, ``#3``, ... for the loss's
    later terms), never a name another term gives itself, whatever the order.

    >>> from lossd.server.losses import REGISTRY
    >>> mse, l1 = REGISTRY.get("mse_loss"), REGISTRY.get("l1_loss")
    >>> _term_names([Term("mse_loss"), Term("mse_loss"), Term("l1_loss", name="mse_loss#2")], [mse, mse, l1])
    ['mse_loss', 'mse_loss#3', 'mse_loss#2']
    """
    explicit: dict[str, int] = {}
    for i, term in enumerate(terms):  # first: an automatic name may not take one a later term gives itself
        if term.name in RESERVED_PARTS:
            raise FieldError(f"terms[{i}].name", f"{term.name!r} is reserved: the parts name the data loss and the "
                            f"penalties so ({', '.join(sorted(RESERVED_PARTS))})")
        if term.name:
            if term.name in explicit:
                raise FieldError(f"terms[{i}].name", f"{term.name!r} is also the name of terms[{explicit[term.name]}]; "
                                 "names must be unique")
            explicit[term.name] = i
    names: list[str] = []
    taken: set[str] = {*RESERVED_PARTS, *explicit}  # a loss named so (a plugin's) becomes "<name>#2"
    last: dict[str, int] = {}  # base -> the last "#k" tried: the ones before it are all taken (linear time)
    for term, spec in zip(terms, specs):
        if term.name:
            names.append(term.name)
            continue
        base = spec.name
        name, k = base, last.get(base, 1)
        if k > 1:
            name = f"{base}#{k}"
        while name in taken:
            k += 1
            name = f"{base}#{k}"
        last[base] = k
        names.append(name)
        taken.add(name)
    return names


def evaluate_objective(
    registry: Registry,
    terms: Sequence[Term],
    inputs: Mapping[str, torch.Tensor],
    parameters: Mapping[str, torch.Tensor] | None = None,
    regularization: Regularization | None = None,
    grad_inputs: Sequence[str] = (),
    device: torch.device | None = None,
    strict: bool = False,
    *,
    plain: bool = False,
    grad_output: torch.Tensor | None = None,
    max_loss_work: int = MAX_LOSS_WORK,
) -> Evaluation:
    """Evaluate a weighted sum of scalar losses plus L1/L2 penalties, with gradients.

    Every request input must be used by at least one term; a term receives the
    inputs it declares. Gradients are returned for inputs that some term can
    differentiate, and for every parameter. Warnings are captured and
    ``strict`` applies as in :func:`~lossd.server.evaluation.evaluate`.

    ``plain``: the request named one loss with ``loss``/``params`` (regularized or with
    parameters), not ``terms``; ``terms`` is then that one loss, refusals name ``params.…``
    and ``parts`` has no entry of its own for it (its value is the ``loss`` part). Otherwise
    the request sent ``terms`` — even one — so refusals name ``terms[i].…`` and ``parts``
    holds every term's own (unweighted) value.

    ``grad_output``: the upstream gradient of the objective, a 0-d floating-point tensor (shape
    ``[]``, as ``torch.autograd.grad`` takes for a scalar output; anything else is refused naming
    ``grad_output``); the gradients are then ``torch.autograd.grad(objective, leaves, grad_output)``,
    torch's own backward of ``grad_output * objective`` to the bit. ``None`` is 1. The objective's
    value is unchanged.

    ``max_loss_work``: the most elements the terms together may build beyond their inputs
    (:func:`~lossd.server.evaluation.check_work`, each term's added to the earlier ones').

    >>> from lossd.server.losses import REGISTRY
    >>> x = {"input": torch.tensor([1.0, 3.0]), "target": torch.zeros(2)}
    >>> evaluate_objective(REGISTRY, [Term("mse_loss", 2.0)], x).parts
    {'mse_loss': 5.0}
    >>> evaluate_objective(REGISTRY, [Term("mse_loss")], x, plain=True).parts
    {}
    """
    if plain and len(terms) != 1:
        raise ValueError(f"a plain request is one loss, not {len(terms)} terms")
    with capture() as seen, strictness(strict):
        result = _evaluate_objective(registry, terms, inputs, parameters, regularization, grad_inputs, device, plain,
                                     grad_output, max_loss_work)
    result.warnings = seen
    return result


def _evaluate_objective(
    registry: Registry,
    terms: Sequence[Term],
    inputs: Mapping[str, torch.Tensor],
    parameters: Mapping[str, torch.Tensor] | None,
    regularization: Regularization | None,
    grad_inputs: Sequence[str],
    device: torch.device | None,
    plain: bool,
    grad_output: torch.Tensor | None = None,
    max_loss_work: int = MAX_LOSS_WORK,
) -> Evaluation:
    parameters = dict(parameters or {})
    reg = regularization or Regularization()
    if not terms:
        raise FieldError("terms", "name at least one loss")

    def prefix(i: int) -> str:  # where a term's fields are: a plain request's loss is the request's own
        return "" if plain else f"terms[{i}]."

    specs = []
    for i, term in enumerate(terms):
        try:
            specs.append(registry.get(term.loss))
        except FieldError as e:
            raise FieldError(f"{prefix(i)}loss" if prefix(i) else e.field, e.message, e.code) from e
        if not math.isfinite(term.weight):
            raise FieldError(f"terms[{i}].weight", "must be a finite number")
    names = _term_names(terms, specs)
    covered = _check_regularization(reg, parameters)
    reads = [_term_reads(i, term, spec, inputs) for i, (term, spec) in enumerate(zip(terms, specs))]

    for sent in inputs:
        if not any(_reads(plan, sent) for plan in reads):
            raise FieldError(f"inputs.{sent}", f"no term uses an input called {sent!r}")
    differentiable = {s for s, t in inputs.items() if has_grad(t)
                      and any((d := spec.input(n)) is not None and d.differentiable
                              for plan, spec in zip(reads, specs) for n in _reads(plan, s))}
    wanted = set(differentiable)
    if grad_inputs:
        wanted = set()
        for k, sent in enumerate(grad_inputs):
            if plain and sent not in inputs and (own := specs[0].input(sent)) is not None:
                sent = next((s for s in inputs if (d := specs[0].input(s)) is not None and d.name == own.name), sent)
            if sent not in differentiable:  # (a plain request's loss takes its inputs' aliases, as evaluate does)
                raise FieldError(f"grad_inputs[{k}]", f"{grad_inputs[k]!r} is not a differentiable input of this "
                                 "request")
            wanted.add(sent)

    def place(t: torch.Tensor) -> torch.Tensor:
        return t.to(device) if device is not None and device.type != "cpu" else t

    leaves = {s: place(t).detach().requires_grad_(True) for s, t in inputs.items() if s in wanted}
    tensors = {s: leaves.get(s, place(t)) for s, t in inputs.items()}
    param_leaves = {n: place(t).detach().requires_grad_(True) for n, t in parameters.items()}
    _check_grad_output(grad_output)  # before the forward: its work would be thrown away

    start = time.perf_counter()
    parts: dict[str, float] = {}
    total: torch.Tensor | None = None
    with torch.enable_grad():
        calls = []  # every term bound (its transforms applied) before any loss runs: a refusal of the last
        built = 0  # what the terms so far build beyond their inputs (check_work), in all
        for i, (term, spec) in enumerate(zip(terms, specs)):  # term costs no forward of the others
            try:
                with _warnings_of_term(prefix(i), spec, reads[i]):
                    mine = _term_tensors(spec, reads[i], tensors)
                    term_params, scalars = split_scalars(spec, legacy_reduction(spec, term.params))
                    bound, _ = bind_inputs(spec, mine, scalars)
                    kwargs = bind_params(spec, term_params, refused=DEPRECATED_PARAMS)
                    built += check_work(spec, {**bound, **scalars}, kwargs, built, limit=max_loss_work)
                    calls.append(({**bound, **scalars}, kwargs))
            except FieldError as e:
                raise FieldError(prefix(i) + e.field, e.message, e.code) from e
        for i, (term, spec, name, (bound, kwargs)) in enumerate(zip(terms, specs, names, calls)):
            try:
                with _warnings_of_term(prefix(i), spec, reads[i]):
                    out = call_loss(spec, bound, kwargs)
            except FieldError as e:
                raise _in_term(e, prefix(i), spec, reads[i]) from e
            if out.dim() != 0:
                raise FieldError(f"{prefix(i)}params.reduction",
                                f"{spec.name} gives shape {list(out.shape)}; objectives need scalar losses "
                                "(use reduction 'mean' or 'sum')")
            if spec.plugin and not out.requires_grad and (wanted_here := [
                    n for n, t in bound.items() if isinstance(t, torch.Tensor) and t.requires_grad
                    and (d := spec.input(n)) is not None and d.differentiable]):
                no_gradient(spec, wanted_here)
            if out.is_complex():
                raise FieldError(prefix(i).rstrip(".") or "inputs",
                                 f"{spec.name} gives a complex value; an objective is a real number (send real "
                                 "inputs, or evaluate the loss alone)")
            parts[name] = out.detach().item()
            weighted = out if term.weight == 1.0 else term.weight * out
            total = weighted if total is None else total + weighted
        assert total is not None
        data_loss = total
        objective = data_loss
        if reg.l1 or reg.l2 or parameters:
            parts["loss"] = data_loss.detach().item()
        objective = add_penalties(objective, [param_leaves[n] for n in covered], reg, parts)
    if plain:
        parts.pop(names[0], None)  # no term was sent: the loss's value is the "loss" part
    forward_s = time.perf_counter() - start

    start = time.perf_counter()
    loss_name = "+".join(spec.name for spec in specs)
    targets = list(leaves.values()) + list(param_leaves.values())
    grads: dict[str, torch.Tensor] = {}
    parameter_grads: dict[str, torch.Tensor] = {}
    if targets:
        upstream = None if grad_output is None else grad_output.to(device=objective.device, dtype=objective.dtype)
        found = call_backward(loss_name, objective, targets, upstream)
        for k, (name, g) in enumerate(zip([*leaves, *param_leaves], found)):
            into = grads if k < len(leaves) else parameter_grads
            into[name] = g
    backward_s = time.perf_counter() - start
    return Evaluation(specs[0], objective.detach(), grads, forward_s, backward_s, parts, parameter_grads, covered,
                      loss_name)


def _check_grad_output(grad_output: torch.Tensor | None) -> None:
    """Refuse an upstream gradient that ``torch.autograd.grad`` would not take for a real scalar objective:
    one of another shape than ``[]`` (one element of shape ``[1]`` too, as torch refuses it), or not of a
    floating-point dtype. Non-finite values were refused with the request's other tensors.

    >>> _check_grad_output(torch.tensor([0.5, 2.0]))
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: grad_output: has shape [2]; an objective is a scalar (shape [])
    """
    if grad_output is None:
        return
    if grad_output.dim() != 0:
        raise FieldError("grad_output", f"has shape {list(grad_output.shape)}; an objective is a scalar (shape [])")
    if not grad_output.is_floating_point():
        raise FieldError("grad_output", f"must have a floating-point dtype (an objective is real), got "
                                        f"{str(grad_output.dtype).removeprefix('torch.')}")


def _term_reads(i: int, term: Term, spec: LossSpec, inputs: Mapping[str, torch.Tensor]
                ) -> dict[str, tuple[str, str]]:
    """For one term: the name its loss gets an input by -> (the request input it reads, transform or "").
    The term's ``inputs`` map routes loss inputs to request inputs (one request input may feed several:
    ``l1_loss(x, x)``); a request input it does not route feeds the loss input of its own name, if any.

    >>> from lossd.server.losses import REGISTRY
    >>> x = torch.ones(2)
    >>> _term_reads(0, Term("l1_loss", inputs={"input": "x", "target": "x"}), REGISTRY.get("l1_loss"), {"x": x})
    {'input': ('x', ''), 'target': ('x', '')}
    """
    plan: dict[str, tuple[str, str]] = {}
    for own, sent in term.inputs.items():
        inp = spec.input(own)
        if inp is None:
            raise FieldError(f"terms[{i}].inputs.{own}", f"{spec.name} has no input called {own!r} "
                            f"(its inputs: {', '.join(x.name for x in spec.inputs)})")
        if sent not in inputs:
            raise FieldError(f"terms[{i}].inputs.{own}", f"reads {sent!r}, which the request does not send")
        if inp.name in plan:
            raise FieldError(f"terms[{i}].inputs.{own}", f"{inp.name!r} is named twice")
        plan[inp.name] = (sent, "")
    routed = {sent for sent, _ in plan.values()}
    for sent in inputs:
        if sent not in routed and (inp := spec.input(sent)) is not None and inp.name not in plan:
            plan[sent] = (sent, "")
    for own, transform in term.transforms.items():
        inp = spec.input(own)
        field_name = f"terms[{i}].transforms.{own}"
        if inp is None:
            raise FieldError(field_name, f"{spec.name} has no input called {own!r}")
        if transform not in TRANSFORMS:
            raise FieldError(field_name, f"is {transform!r}; must be one of {list(TRANSFORMS)}")
        name = next((n for n in plan if (spec.input(n) or inp).name == inp.name), None)
        if name is None:
            raise FieldError(field_name, f"{inp.name!r} reads no request input")
        plan[name] = (plan[name][0], transform)
    return plan


def _in_term(e: FieldError, prefix: str, spec: LossSpec, plan: Mapping[str, tuple[str, str]]) -> FieldError:
    """A refusal from inside one term's loss, as the request names things: ``inputs.<the request input
    read>``, the term and the loss's name for it in the message; anything else under the term's prefix."""
    if not prefix:
        return e
    own = e.field.removeprefix("inputs.")
    sent = next((s for n, (s, _) in plan.items() if (inp := spec.input(n)) is not None and inp.name == own),
                None) if e.field.startswith("inputs.") else None
    if sent is None:
        return FieldError(prefix + e.field if e.field else prefix.rstrip("."), e.message, e.code)
    return FieldError(f"inputs.{sent}", f"{prefix.rstrip('.')} ({spec.name}, as its {own}): {e.message}", e.code)


@contextlib.contextmanager
def _warnings_of_term(prefix: str, spec: LossSpec, plan: Mapping[str, tuple[str, str]]) -> Iterator[None]:
    """Pass on the warnings raised inside the block (one term's binding or loss) as the request names things:
    one about an input of the loss (``inputs.target: ...``) names the request input read and the term, as
    :func:`_in_term` names a refusal (two terms' targets read from two inputs are two warnings)."""
    with capture() as seen:
        yield
    for text in seen:
        field_name, sep, message = text.partition(": ")
        if prefix and sep and field_name.startswith("inputs.") and " " not in field_name:
            e = _in_term(FieldError(field_name, message), prefix, spec, plan)
            text = f"{e.field}: {e.message}"
        warnings.warn(text, stacklevel=1)  # to the request's capture


def _reads(plan: Mapping[str, tuple[str, str]], sent: str) -> list[str]:
    """The names under which one term's loss gets request input ``sent`` (:func:`_term_reads`)."""
    return [name for name, (s, _) in plan.items() if s == sent]


def _term_tensors(spec: LossSpec, plan: Mapping[str, tuple[str, str]], tensors: Mapping[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """The tensors one term's loss receives, transforms applied (fields name the term)."""
    out: dict[str, torch.Tensor] = {}
    for name, (sent, transform) in plan.items():
        t = tensors[sent]
        field_name = f"transforms.{name}"  # the caller adds the term's prefix
        if transform in ("softmax", "log_softmax", "sigmoid"):
            if not t.is_floating_point():
                raise FieldError(field_name, f"{transform} needs a floating-point input, got {str(t.dtype)[6:]}")
            if transform != "sigmoid" and t.dim() < 2:
                raise FieldError(field_name, f"{transform} is over dim 1: needs (N, C, *), got shape {list(t.shape)}")
            t = torch.sigmoid(t) if transform == "sigmoid" else getattr(t, transform)(dim=1)
        elif transform == "one_hot":
            first = next((tensors[s] for n, (s, _) in plan.items()
                          if (spec.input(n) or spec.inputs[-1]).name == spec.inputs[0].name), None)
            if t.is_floating_point() or t.dtype == torch.bool:
                raise FieldError(field_name, f"one_hot needs integer class indices, got {str(t.dtype)[6:]}")
            if first is None or first.dim() < 2 or not first.is_floating_point():
                raise FieldError(field_name, f"one_hot takes the class count from {spec.inputs[0].name!r} (N, C, *)")
            n_classes = first.shape[1]
            if list(t.shape) != [first.shape[0], *first.shape[2:]]:
                raise FieldError(field_name, f"class indices of shape {list(t.shape)} must be "
                                f"{[first.shape[0], *first.shape[2:]]} to match {spec.inputs[0].name!r}")
            if t.numel() and not bool(((t >= 0) & (t < n_classes)).all()):
                raise FieldError(field_name, f"class indices must lie in [0, {n_classes})")
            t = torch.nn.functional.one_hot(t.long(), n_classes).movedim(-1, 1).to(first.dtype)
        out[name] = t
    return out


def check_patterns(reg: Regularization, others: Sequence[tuple[str, Sequence[str]]] = ()) -> None:
    """Refuse more than :data:`MAX_PATTERNS` include or exclude patterns, and more than
    :data:`MAX_PATTERN_CHARS` characters of patterns in all (with ``others``: ``(field, patterns)``
    pairs of the same request), before any is compiled.

    >>> check_patterns(Regularization(include=("*",) * 300))
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: regularization.include: has 300 patterns; at most 256 are allowed
    """
    for key in ("include", "exclude"):
        n = len(getattr(reg, key))
        if n > MAX_PATTERNS:
            raise FieldError(f"regularization.{key}", f"has {n} patterns; at most {MAX_PATTERNS} are allowed")
    total = 0
    for where, patterns in (("regularization.include", reg.include), ("regularization.exclude", reg.exclude),
                            *others):
        for i, pattern in enumerate(patterns):
            total += len(pattern)
            if total > MAX_PATTERN_CHARS:
                raise FieldError(f"{where}[{i}]", f"brings the request's glob patterns to {total} characters; at "
                                 f"most {MAX_PATTERN_CHARS} in all (regularization and param_groups together)")


def _check_regularization(reg: Regularization, parameters: Mapping[str, torch.Tensor]) -> list[str]:
    """Refuse a bad regularization; the names of the parameters it covers (none without l1 or l2)."""
    check_patterns(reg)
    for key in ("l1", "l2"):
        value = getattr(reg, key)
        if not math.isfinite(value) or value < 0:
            raise FieldError(f"regularization.{key}", f"is {value}; must be a finite number >= 0")
    if (reg.l1 or reg.l2) and not parameters:
        raise FieldError("parameters", "regularization needs the parameter tensors it applies to")
    for name, t in parameters.items():
        if not t.is_floating_point():
            raise FieldError(f"parameters.{name}", "must have a floating-point dtype")
    covered = covered_parameters(parameters, reg) if (reg.l1 or reg.l2) else []
    if (reg.l1 or reg.l2) and not covered:
        raise covers_nothing(reg, f"the parameters sent ({', '.join(sorted(parameters))})")
    return covered


def covers_nothing(reg: Regularization, what: str) -> FieldError:
    """The refusal of a regularization that covers none of ``what`` (the parameters sent, a model's),
    naming the field that decided it: ``include``, ``exclude``, or neither (the default rule).

    >>> print(covers_nothing(Regularization(l2=1, exclude=("*",)), "the model's parameters (w)"))
    regularization.exclude: leaves none of the model's parameters (w)
    """
    if reg.include:
        return FieldError("regularization.include", f"covers none of {what}")
    if reg.exclude:
        return FieldError("regularization.exclude", f"leaves none of {what}")
    return FieldError("regularization", f"covers none of {what}: without include or exclude it skips biases (names "
                      "ending in bias) and tensors of fewer than 2 dims; name the ones to cover in include")
