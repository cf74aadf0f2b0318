"""Training data: built-in synthetic sets and inline tensors, as one :class:`Dataset`.

A data set is either classification (``labels``: int64 class indices, shape
``(N,)``, and ``num_classes``) or regression (``y``: float32, shape ``(N, K)``).
Every built-in set is generated from its own seeded ``torch.Generator``, so
the same parameters give the same samples on every call::

    >>> d = make_builtin("rings", {"n_positive": 3, "n_negative": 5}, default_seed=42)
    >>> d.x.shape, d.labels.tolist(), d.num_classes
    (torch.Size([8, 2]), [1, 1, 1, 0, 0, 0, 0, 0], 2)
    >>> torch.equal(d.x, make_builtin("rings", {"n_positive": 3, "n_negative": 5}, default_seed=42).x)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..._settings import flag_name
from ..._wire import FieldError
from ..evaluation import bind_params
from ..losses import Param
from ..rpc import check_finite

__all__ = ["BUILTINS", "Builtin", "Dataset", "make_builtin", "make_inline", "split"]


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, ``(N, D)``) and either class ``labels`` or a regression target ``y``."""

    x: torch.Tensor
    labels: torch.Tensor | None = None
    num_classes: int = 0
    y: torch.Tensor | None = None

    @property
    def classification(self) -> bool:
        """Whether the targets are class labels."""
        return self.labels is not None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Builtin:
    """A synthetic data set: its parameters, the sizes they ask for (computed, nothing generated), and
    the generator. ``targets`` is the number of classes of a classification set (``classification``),
    else the number of regression targets."""

    name: str
    doc: str
    params: tuple[Param, ...]
    samples: Callable[[Mapping[str, Any]], int]
    features: Callable[[Mapping[str, Any]], int]
    make: Callable[[Mapping[str, Any], torch.Generator], Dataset]
    targets: Callable[[Mapping[str, Any]], int]
    classification: bool


_SEED = Param("seed", "int", None, "Seed of the generator; default: the job's seed.", min=0, nullable=True)


def _ring(n: int, radius: float, noise: float, g: torch.Generator) -> torch.Tensor:
    angle = torch.rand(n, generator=g, dtype=torch.float64) * (2 * math.pi)
    r = radius + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)


def _rings(p: Mapping[str, Any], g: torch.Generator) -> Dataset:
    pos = _ring(p["n_positive"], p["radius_positive"], p["noise"], g)
    neg = _ring(p["n_negative"], p["radius_negative"], p["noise"], g)
    labels = torch.cat([torch.ones(len(pos), dtype=torch.int64), torch.zeros(len(neg), dtype=torch.int64)])
    return Dataset(torch.cat([pos, neg]).to(torch.float32), labels, 2)


def _moons(p: Mapping[str, Any], g: torch.Generator) -> Dataset:
    n = p["n_samples"]
    n_out, n_in = n // 2, n - n // 2
    t_out = torch.linspace(0, math.pi, n_out, dtype=torch.float64)
    t_in = torch.linspace(0, math.pi, n_in, dtype=torch.float64)
    outer = torch.stack([torch.cos(t_out), torch.sin(t_out)], dim=1)
    inner = torch.stack([1 - torch.cos(t_in), 1 - torch.sin(t_in) - 0.5], dim=1)
    x = torch.cat([outer, inner]) + p["noise"] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    labels = torch.cat([torch.zeros(n_out, dtype=torch.int64), torch.ones(n_in, dtype=torch.int64)])
    return Dataset(x.to(torch.float32), labels, 2)


def _blobs(p: Mapping[str, Any], g: torch.Generator) -> Dataset:
    n, k, d = p["n_samples"], p["centers"], p["n_features"]
    box = p["center_box"]
    centers = (torch.rand(k, d, generator=g, dtype=torch.float64) * 2 - 1) * box
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    labels = torch.cat([torch.full((c,), i, dtype=torch.int64) for i, c in enumerate(counts)])
    x = centers[labels] + p["cluster_std"] * torch.randn(n, d, generator=g, dtype=torch.float64)
    return Dataset(x.to(torch.float32), labels, k)


def _linear_regression(p: Mapping[str, Any], g: torch.Generator) -> Dataset:
    n, d, k = p["n_samples"], p["n_features"], p["n_targets"]
    weight = torch.randn(d, k, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ weight + p["bias"] + p["noise"] * torch.randn(n, k, generator=g, dtype=torch.float64)
    return Dataset(x.to(torch.float32), y=y.to(torch.float32))


def _count(name: str) -> Param:
    return Param(name, "int", 1000, "Number of samples.", min=1)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "rings",
            "Binary: positives (label 1) on a ring of radius 5, negatives (label 0) on a ring of radius 8, "
            "uniform angle, radial noise N(0, noise^2). 2 features.",
            (
                Param("n_positive", "int", 2000, "Samples on the inner (positive) ring.", min=0),
                Param("n_negative", "int", 6000, "Samples on the outer (negative) ring.", min=0),
                Param("radius_positive", "float", 5.0, "Radius of the positive ring.", min=0.0),
                Param("radius_negative", "float", 8.0, "Radius of the negative ring.", min=0.0),
                Param("noise", "float", 1.0, "Standard deviation of the radial noise.", min=0.0),
                _SEED,
            ),
            lambda p: p["n_positive"] + p["n_negative"],
            lambda p: 2,
            _rings,
            lambda p: 2,
            True,
        ),
        Builtin(
            "moons",
            "Binary: two interleaving half circles (scikit-learn's make_moons), Gaussian noise. 2 features.",
            (_count("n_samples"), Param("noise", "float", 0.1, "Standard deviation of the noise.", min=0.0), _SEED),
            lambda p: p["n_samples"],
            lambda p: 2,
            _moons,
            lambda p: 2,
            True,
        ),
        Builtin(
            "blobs",
            "Multi-class: isotropic Gaussian blobs around centers drawn uniformly in [-center_box, center_box]^d.",
            (
                _count("n_samples"),
                Param("centers", "int", 3, "Number of classes (blobs).", min=2, max=1000),
                Param("n_features", "int", 2, "Number of features.", min=1, max=10000),
                Param("cluster_std", "float", 1.0, "Standard deviation of each blob.", min=0.0),
                Param("center_box", "float", 10.0, "Centers lie in [-center_box, center_box] per feature.", min=0.0),
                _SEED,
            ),
            lambda p: p["n_samples"],
            lambda p: p["n_features"],
            _blobs,
            lambda p: p["centers"],
            True,
        ),
        Builtin(
            "linear_regression",
            "Regression: y = x @ W + bias + noise, x ~ N(0, 1), W ~ N(0, 1) (drawn from the seed).",
            (
                _count("n_samples"),
                Param("n_features", "int", 3, "Number of features.", min=1, max=10000),
                Param("n_targets", "int", 1, "Number of regression targets (outputs).", min=1, max=1000),
                Param("noise", "float", 0.1, "Standard deviation of the Gaussian noise on y.", min=0.0),
                Param("bias", "float", 0.0, "Constant added to y.", min=-1e6, max=1e6),
                _SEED,
            ),
            lambda p: p["n_samples"],
            lambda p: p["n_features"],
            _linear_regression,
            lambda p: p["n_targets"],
            False,
        ),
    )
}


def bind_builtin_params(
    name: str, params: Mapping[str, Any], field: str = "data.builtin"
) -> tuple[Builtin, dict[str, Any]]:
    """The built-in set called ``name`` and its parameters, coerced and with defaults."""
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise FieldError(f"{field}.name", f"unknown data set {name!r}; built-in sets: {', '.join(sorted(BUILTINS))}",
                        "NOT_FOUND" if name else "INVALID_ARGUMENT")
    return builtin, bind_params(builtin, params, prefix=f"{field}.")


def make_builtin(name: str, params: Mapping[str, Any], default_seed: int = 0) -> Dataset:
    """Generate built-in set ``name`` (parameters as in :data:`BUILTINS`; unchecked sizes)."""
    builtin, bound = bind_builtin_params(name, params)
    seed = bound["seed"] if bound["seed"] is not None else default_seed
    return builtin.make(bound, torch.Generator().manual_seed(seed))


#: Why a training job's NaN or infinite tensor cannot be let through (named when refused).
NO_NON_FINITE = "a training job's data and constant inputs must be finite (TrainJob has no allow_non_finite)"


def make_inline(x: torch.Tensor, y: torch.Tensor, num_classes: int = 0, field: str = "data.inline",
                max_classes: int | None = None) -> Dataset:
    """A data set from decoded tensors: integer/bool ``y`` are class labels, float ``y`` a regression target.

    The number of classes (``num_classes``, else ``max(y) + 1``) is checked against ``max_classes``
    (``--max-classes``) before anything is sized by it.

    >>> d = make_inline(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0, 1, 1]))
    >>> d.num_classes, d.labels.tolist()
    (2, [0, 1, 1])
    """
    for name, t in (("x", x), ("y", y)):
        if t.is_complex():  # torch's layers and losses refuse complex numbers; float32 would drop the imaginary part
            raise FieldError(f"{field}.{name}", f"is {str(t.dtype).replace('torch.', '')}; a training job's data "
                             "must be real (floating-point, integer or bool)")
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() != 2:
        raise FieldError(f"{field}.x", f"must have shape (N, D) or (N,); got {list(x.shape)}")
    n = x.shape[0]
    if n < 2:
        raise FieldError(f"{field}.x", f"needs at least 2 samples, got {n}")
    if x.dtype == torch.bool:
        x = x.to(torch.float32)
    x = x.to(torch.float32)
    _finite(x, f"{field}.x")
    if y.dim() == 0 or y.shape[0] != n:
        raise FieldError(f"{field}.y", f"must have N = {n} samples first (like x); got shape {list(y.shape)}")
    if y.is_floating_point():
        if num_classes:
            raise FieldError(
                f"{field}.num_classes", "is for integer class labels; this y is floating-point (regression)"
            )
        if y.dim() == 1:
            y = y.unsqueeze(1)
        if y.dim() != 2:
            raise FieldError(
                f"{field}.y", f"a floating-point (regression) y must be (N,) or (N, K); got {list(y.shape)}"
            )
        y = y.to(torch.float32)
        _finite(y, f"{field}.y")
        return Dataset(x, y=y)
    if y.dim() != 1:
        raise FieldError(f"{field}.y", f"class labels must have shape (N,); got {list(y.shape)}")
    labels = y.to(torch.int64)
    if int(labels.min()) < 0:
        raise FieldError(f"{field}.y", f"class labels must be >= 0; found {int(labels.min())}")
    top = int(labels.max())
    if num_classes < 0:
        raise FieldError(f"{field}.num_classes", f"is {num_classes}; must be >= 2 (or 0 for max(y) + 1)")
    k = num_classes or max(2, top + 1)
    if max_classes is not None and k > max_classes:
        which = f"{field}.num_classes" if num_classes else f"{field}.y"
        how = "num_classes" if num_classes else f"the largest label is {top}, so the number of classes (max(y) + 1)"
        raise FieldError(
            which,
            f"{how} is {k}; the server's limit is {max_classes} classes ({flag_name('max_classes')})",
            "RESOURCE_EXHAUSTED",
        )
    if k < 2:
        raise FieldError(f"{field}.num_classes", f"is {k}; classification needs at least 2 classes")
    if top >= k:
        raise FieldError(f"{field}.y", f"class labels must lie in [0, {k}) (num_classes {k}); found {top}")
    return Dataset(x, labels, k)


def _finite(t: torch.Tensor, field: str) -> None:
    """Training data must be finite (after conversion to float32)."""
    check_finite(t, field, NO_NON_FINITE)


def split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, validation)`` indices: a seeded permutation, the first ``round(n * fraction)`` held out (at
    least one when ``fraction`` is above 0: a fraction asks for a validation split).

    >>> train, val = split(10, 0.3, seed=0)
    >>> len(train), len(val), sorted(train.tolist() + val.tolist()) == list(range(10))
    (7, 3, True)
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * fraction)) if fraction > 0 else 0
    return perm[n_val:], perm[:n_val]
