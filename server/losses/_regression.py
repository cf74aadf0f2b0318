"""Regression losses from ``torch.nn``: l1, mse, smooth L1, Huber, Poisson and Gaussian NLL.

Each entry calls torch's own functional, so values and gradients are bit-identical
to local torch, with torch's type promotion and broadcasting. Outside the documented
domain (a target shaped unlike the input, negative Poisson counts or rates) the loss
is computed as torch computes it, with a warning (:class:`~._registry.Domain`;
refused for a strict request).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torch's functional.pyi lags its functional.py: the `weight=` of l1_loss, mse_loss and
# huber_loss is missing there, hence the `type: ignore[call-arg]` on those calls.
from ._registry import REDUCTION, Domain, Input, LossError, Param, param_bound, register_loss, same_shape

__all__: list[str] = []

_PRED = Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predictions, any shape")
_TARGET = Input("target", "target", differentiable=True, aliases=("y_true",), doc="targets, same shape as input")
_WEIGHT = Input(
    "weight",
    "element weight",
    differentiable=True,
    required=False,
    doc="optional per-element weights, same shape as input (functional form only; torch.nn's class has no weight)",
)


def _pair(dt: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "input": torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=dt),
        "target": torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.5, -2.0]], dtype=dt),
    }


#: Target-size broadcasting: torch warns and broadcasts (its warning reaches the caller).
_SAME_SHAPE = same_shape()


@register_loss(
    "l1_loss",
    broadcasts=("input", "target", "weight"),
    aliases=("L1Loss", "l1", "mae"),
    inputs=(_PRED, _TARGET, _WEIGHT),
    params=(REDUCTION,),
    description="Mean absolute error: |input - target|, optionally weighted, reduced.",
    source="torch.nn.functional.l1_loss",
    legacy_reduction=True,
    example=_pair,
    domain=(_SAME_SHAPE,),
    refuses=("shapes that do not broadcast, a weight shaped unlike the input (torch's own errors)",),
    vectorized=True,
)
def l1_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, reduction: str) -> torch.Tensor:
    r"""``l_i = w_i |x_i - y_i|`` (``w_i = 1`` without weight).

    'mean' divides by the number of elements, or by ``sum(w)`` when weighted.
    Shapes: input (*), target (*) and weight (*) all the same.
    """
    _SAME_SHAPE.check(target.shape == input.shape)
    return F.l1_loss(input, target, reduction=reduction, weight=weight)  # type: ignore[call-arg]


@register_loss(
    "mse_loss",
    broadcasts=("input", "target", "weight"),
    aliases=("MSELoss", "mse", "l2_loss"),
    inputs=(_PRED, _TARGET, _WEIGHT),
    params=(REDUCTION,),
    description="Mean squared error: (input - target)^2, optionally weighted, reduced.",
    source="torch.nn.functional.mse_loss",
    legacy_reduction=True,
    example=_pair,
    domain=(_SAME_SHAPE,),
    refuses=("shapes that do not broadcast, a weight shaped unlike the input (torch's own errors)",),
    vectorized=True,
)
def mse_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, reduction: str) -> torch.Tensor:
    r"""``l_i = w_i (x_i - y_i)^2`` (``w_i = 1`` without weight).

    'mean' divides by the number of elements, or by ``sum(w)`` when weighted.
    Shapes: input (*), target (*) and weight (*) all the same.
    """
    _SAME_SHAPE.check(target.shape == input.shape)
    return F.mse_loss(input, target, reduction=reduction, weight=weight)  # type: ignore[call-arg]


@register_loss(
    "smooth_l1_loss",
    broadcasts=("input", "target"),
    aliases=("SmoothL1Loss", "smooth_l1"),
    inputs=(_PRED, _TARGET),
    params=(
        REDUCTION,
        Param("beta", "float", 1.0, "Where the loss changes from L2 to L1; 0 gives plain L1.", min=0.0),
    ),
    description="Smooth L1: squared below beta, absolute above, reduced.",
    source="torch.nn.functional.smooth_l1_loss",
    legacy_reduction=True,
    example=_pair,
    domain=(_SAME_SHAPE,),
    refuses=("shapes that do not broadcast (torch's own error)",),
)
def smooth_l1_loss(input: torch.Tensor, target: torch.Tensor, *, reduction: str, beta: float) -> torch.Tensor:
    r"""``l_i = 0.5 (x_i - y_i)^2 / beta`` if ``|x_i - y_i| < beta``, else ``|x_i - y_i| - 0.5 beta``.

    Shapes: input (*), target (*) the same.
    """
    _SAME_SHAPE.check(target.shape == input.shape)
    return F.smooth_l1_loss(input, target, reduction=reduction, beta=beta)


@register_loss(
    "huber_loss",
    broadcasts=("input", "target", "weight"),
    aliases=("HuberLoss", "huber"),
    inputs=(_PRED, _TARGET, _WEIGHT),
    params=(
        REDUCTION,
        Param("delta", "float", 1.0, "Where the loss changes from quadratic to delta-scaled L1.", min=0.0,
              min_exclusive=True),
    ),
    description="Huber loss: squared below delta, delta-scaled absolute above, optionally weighted, reduced.",
    source="torch.nn.functional.huber_loss",
    notes="With weight, 'mean' is the plain mean of the weighted losses (torch's rule; l1/mse divide by sum(weight)).",
    example=_pair,
    domain=(_SAME_SHAPE,),
    refuses=("shapes that do not broadcast, a weight shaped unlike the input (torch's own errors)",),
)
def huber_loss(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, reduction: str, delta: float
) -> torch.Tensor:
    r"""``l_i = w_i 0.5 (x_i - y_i)^2`` if ``|x_i - y_i| < delta``, else ``w_i delta (|x_i - y_i| - 0.5 delta)``.

    'mean' is the mean over elements (also when weighted). Shapes: input, target, weight (*), the same.
    """
    _SAME_SHAPE.check(target.shape == input.shape)
    return F.huber_loss(input, target, reduction=reduction, delta=delta, weight=weight)  # type: ignore[call-arg]


_COUNTS = Domain("inputs.target", "counts are >= 0", "torch's formula takes negative values as they are")
_RATES = Domain("inputs.input", "rates are >= 0 when log_input is false",
                "torch takes log(input + eps) of what it is given: NaN below -eps")
_POISSON_EPS = param_bound("eps", "eps >= 0", "torch adds a negative eps inside the log as it is")
_GAUSSIAN_EPS = param_bound("eps", "eps >= 0", "torch clamps the variances at a negative eps as it is "
                            "(no clamp for variances >= 0)")


def _poisson_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=dt),
        "target": torch.tensor([[1.0, 0.0, 6.0], [4.0, 1.0, 0.0]], dtype=dt),
    }


@register_loss(
    "poisson_nll_loss",
    broadcasts=("input", "target"),
    aliases=("PoissonNLLLoss", "poisson_nll"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="log-rate (log_input=true) or rate >= 0 (log_input=false), any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",),
              doc="observed counts >= 0, same shape as input"),
    ),
    params=(
        Param("log_input", "bool", True, "Input is the log of the rate: loss exp(input) - target*input."),
        Param("full", "bool", False, "Add the Stirling term target*log(target) - target + 0.5*log(2*pi*target)."),
        Param("eps", "float", 1e-8, "Added to the rate inside the log when log_input is false."),
        REDUCTION,
    ),
    description="Poisson negative log-likelihood of counts given a (log-)rate.",
    source="torch.nn.functional.poisson_nll_loss",
    legacy_reduction=True,
    example=_poisson_example,
    domain=(same_shape(torch_warns=False), _COUNTS, _RATES, _POISSON_EPS),
    refuses=("shapes that do not broadcast (torch's own error)",),
)
def poisson_nll_loss(
    input: torch.Tensor, target: torch.Tensor, *, log_input: bool, full: bool, eps: float, reduction: str
) -> torch.Tensor:
    r"""``l_i = exp(x_i) - y_i x_i`` (log_input) or ``x_i - y_i log(x_i + eps)``,
    plus ``y_i log y_i - y_i + 0.5 log(2 pi y_i)`` for ``y_i > 1`` when ``full``.

    Shapes: input (*), target (*) the same.
    """
    same_shape(torch_warns=False).check(target.shape == input.shape)
    if not target.is_complex():  # torch computes complex Poisson NLL too; "negative" means nothing there
        _COUNTS.check(not bool((target < 0).any()))
    if not log_input and not input.is_complex():
        _RATES.check(not bool((input < 0).any()))
    _POISSON_EPS.check(eps >= 0)
    return F.poisson_nll_loss(input, target, log_input=log_input, full=full, eps=eps, reduction=reduction)


_GAUSSIAN_TARGET = Domain("inputs.target", "the input's shape, or that shape with one dimension equal to 1",
                          "torch broadcasts other shapes against the input")


def _gaussian_example(dt: torch.dtype) -> dict[str, object]:
    return {**_pair(dt), "var": torch.tensor([[0.5, 1.0, 2.0], [1.0, 0.25, 1.5]], dtype=dt)}


@register_loss(
    "gaussian_nll_loss",
    broadcasts=("input", "target"),
    aliases=("GaussianNLLLoss", "gaussian_nll"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predicted means, (N, *) or (*)"),
        Input("target", "target", differentiable=True, aliases=("y_true",),
              doc="samples, the input's shape or that shape with one dimension equal to 1"),
        Input("var", "variance", differentiable=True, scalar="float",
              doc="predicted variances >= 0: the input's shape, that shape with one dimension equal to 1, "
                  "or that shape without its last dimension; or one number, sent as params.var"),
    ),
    params=(
        Param("full", "bool", False, "Add the constant 0.5*log(2*pi)."),
        Param("eps", "float", 1e-6, "Variances are clamped to at least eps (the clamp passes gradients through)."),
        REDUCTION,
    ),
    description="Gaussian negative log-likelihood of targets given predicted means and variances.",
    source="torch.nn.functional.gaussian_nll_loss",
    notes="A constant variance is a tensor input or a number in params.var (torch's float var; no gradient).",
    example=_gaussian_example,
    domain=(_GAUSSIAN_TARGET, _GAUSSIAN_EPS),
    refuses=("negative variances, a var shape torch cannot match to the input (torch's own errors)",),
)
def gaussian_nll_loss(
    input: torch.Tensor, target: torch.Tensor, var: torch.Tensor | float, *, full: bool, eps: float, reduction: str
) -> torch.Tensor:
    r"""``l_i = 0.5 (log(max(var_i, eps)) + (x_i - y_i)^2 / max(var_i, eps))`` (+ ``0.5 log(2 pi)`` when full).

    Shapes: input (N, *) or (*); target the same, or with one dimension 1;
    var the same, with one dimension 1, or with one dimension fewer.
    """
    _GAUSSIAN_TARGET.check(target.dim() == input.dim() and sum(
        t != i for t, i in zip(target.shape, input.shape)) <= 1 and all(
        t == i or t == 1 for t, i in zip(target.shape, input.shape)))
    _GAUSSIAN_EPS.check(eps >= 0)
    field = "params.var" if isinstance(var, float) else "inputs.var"
    try:
        return F.gaussian_nll_loss(input, target, var, full=full, eps=eps, reduction=reduction)
    except ValueError as e:
        if str(e).startswith("var") and isinstance(var, torch.Tensor):
            raise LossError(
                field,
                f"{e}: got {list(var.shape)} for input {list(input.shape)}; var must have the input's shape, "
                "that shape with one dimension equal to 1, or that shape without its last dimension",
            ) from e
        if str(e).startswith("var"):
            raise LossError(field, f"{e}: variances must be >= 0") from e
        raise
