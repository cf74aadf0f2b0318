"""Regularizers of a dense displacement field (N, D, *spatial), D = the number of spatial dims, for
image registration (MONAI's BendingEnergyLoss and DiffusionLoss): the squared first (diffusion,
VoxelMorph) or second (bending energy) finite differences of the field, averaged.

>>> import torch
>>> ramp = torch.arange(4.0).repeat(1, 1, 1)  # (N=1, D=1, W=4): a linear field bends nowhere
>>> bending_energy_loss(ramp, normalize=False, reduction="mean").item()
0.0
"""

from __future__ import annotations

import torch

from ._registry import Equivalent, Input, Param, register_loss, require

__all__ = ["bending_energy_loss", "diffusion_loss"]

_INPUTS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred", "pred"),
          doc="displacement field (N, D, *spatial), D = 1, 2 or 3 spatial dims, each longer than 2"),
)
_NORMALIZE = Param("normalize", "bool", False, "Scale each component's differences by the sizes of the spatial dims "
                   "(MONAI's normalize: makes the loss independent of the image size).")


def _reduction(shape: str) -> Param:
    return Param("reduction", "string", "mean", f"'mean' or 'sum' over every element, or 'none' {shape}.",
                 choices=("none", "mean", "sum"))


def _check(field: torch.Tensor) -> None:
    require(field.dim() in (3, 4, 5) and field.shape[0] > 0, "inputs.input",
            f"must be (N, D, *spatial) with 1 to 3 spatial dims, got shape {list(field.shape)}")
    require(field.shape[1] == field.dim() - 2, "inputs.input",
            f"has {field.shape[1]} components (dim 1); a displacement field has one per spatial dim: {field.dim() - 2}")
    require(all(s > 2 for s in field.shape[2:]), "inputs.input",
            f"spatial sizes {list(field.shape[2:])} must all be > 2 (central differences)")


def _inner(x: torch.Tensor, moved: dict[int, int]) -> torch.Tensor:
    """x with every spatial dim sliced to [1:-1], shifted by +1 / -1 along the dims in ``moved``."""
    index: list[slice] = [slice(None), slice(None)]
    for d in range(2, x.dim()):
        shift = moved.get(d, 0)
        index.append(slice(1 + shift, x.shape[d] - 1 + shift))
    return x[tuple(index)]


def _scale(field: torch.Tensor, numerator: float) -> torch.Tensor:
    """(1, D, 1, ...): numerator / size of the component's own spatial dim (MONAI's normalize)."""
    sizes = torch.tensor(field.shape[2:], dtype=field.dtype, device=field.device)
    return (numerator / sizes).reshape(1, -1, *[1] * (field.dim() - 2))


def _example(dt: torch.dtype) -> dict[str, object]:
    return {"input": torch.tensor([[[0.0, 0.5, 0.8, 1.5], [0.1, 0.2, 0.9, 1.0], [0.3, 0.1, 0.4, 0.7]],
                                   [[0.2, 0.3, 0.1, 0.0], [0.5, 0.6, 0.2, 0.4], [0.9, 0.7, 0.8, 0.6]]], dtype=dt)
            .unsqueeze(0)}


@register_loss(
    "bending_energy_loss",
    aliases=("BendingEnergyLoss", "bending_energy"),
    refuses=("a field not shaped (N, D, *spatial) with D spatial dims, each longer than 2",),
    inputs=_INPUTS,
    params=(_NORMALIZE, _reduction("(N, D, *spatial - 2)")),
    description="Bending energy of a displacement field: Σ over dim pairs of squared second differences "
    "(mixed ones twice), MONAI's BendingEnergyLoss.",
    source="lossd (Rueckert et al. 1999; MONAI/DeepReg BendingEnergyLoss conventions)",
    notes="Pure second differences x[i+1] - 2x[i] + x[i-1], mixed ones (x[i+1, j+1] - x[i+1, j-1] - x[i-1, j+1] + "
    "x[i-1, j-1]) / 4, every spatial dim sliced to [1:-1]. No target: TrainJob cannot use it.",
    example=_example,
    equivalents=(
        Equivalent("monai.losses.BendingEnergyLoss()", {}, "field (N, D, *spatial)"),
        Equivalent("monai.losses.BendingEnergyLoss(normalize=True, reduction='none')",
                   {"normalize": True, "reduction": "none"}, "MONAI computes the size ratios in float32"),
    ),
)
def bending_energy_loss(input: torch.Tensor, *, normalize: bool, reduction: str) -> torch.Tensor:
    """``Σ_i (∂²u/∂x_i²)² + 2 Σ_{i<j} (∂²u/∂x_i∂x_j)²`` per element, by central differences."""
    _check(input)
    energy = torch.zeros((), dtype=input.dtype, device=input.device)
    for d1 in range(2, input.dim()):
        d2 = _inner(input, {d1: 1}) - 2 * _inner(input, {}) + _inner(input, {d1: -1})
        if normalize:
            d2 = d2 * _scale(input, input.shape[d1] ** 2)
        energy = energy + d2**2
        for dd in range(d1 + 1, input.dim()):
            mixed = (_inner(input, {d1: 1, dd: 1}) - _inner(input, {d1: 1, dd: -1})
                     - _inner(input, {d1: -1, dd: 1}) + _inner(input, {d1: -1, dd: -1})) / 4.0
            if normalize:
                mixed = mixed * _scale(input, input.shape[d1] * input.shape[dd])
            energy = energy + 2 * mixed**2
    return energy if reduction == "none" else (energy.sum() if reduction == "sum" else energy.mean())


@register_loss(
    "diffusion_loss",
    aliases=("DiffusionLoss", "diffusion_regularization_loss"),
    refuses=("a field not shaped (N, D, *spatial) with D spatial dims, each longer than 2",),
    inputs=_INPUTS,
    params=(_NORMALIZE, _reduction("(N, D, *spatial - 2)")),
    description="Diffusion regularizer of a displacement field: Σ over dims of squared central differences "
    "(VoxelMorph), MONAI's DiffusionLoss.",
    source="lossd (Balakrishnan et al. 2019; MONAI DiffusionLoss conventions)",
    notes="Central differences (x[i+1] - x[i-1]) / 2, every spatial dim sliced to [1:-1]. No target: TrainJob "
    "cannot use it.",
    example=_example,
    equivalents=(
        Equivalent("monai.losses.DiffusionLoss()", {}, "field (N, D, *spatial)"),
        Equivalent(
            "monai.losses.DiffusionLoss(normalize=True, reduction='sum')",
            {"normalize": True, "reduction": "sum"},
            "MONAI computes the size ratios in float32",
        ),
    ),
)
def diffusion_loss(input: torch.Tensor, *, normalize: bool, reduction: str) -> torch.Tensor:
    """``Σ_i (∂u/∂x_i)²`` per element, by central differences."""
    _check(input)
    total = torch.zeros((), dtype=input.dtype, device=input.device)
    for d1 in range(2, input.dim()):
        g = (_inner(input, {d1: 1}) - _inner(input, {d1: -1})) / 2.0
        if normalize:
            g = g * _scale(input, input.shape[d1])
        total = total + g**2
    return total if reduction == "none" else (total.sum() if reduction == "sum" else total.mean())
