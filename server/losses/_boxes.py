"""Bounding-box regression losses with torchvision.ops' formulas: generalized, distance and
complete IoU. Boxes are ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``; the generalized IoU
also takes 3-D boxes ``(x1, y1, z1, x2, y2, z2)`` (MONAI's BoxGIoULoss), where its formula carries over
(volumes for areas). Distance and complete IoU stay 2-D: torchvision and the papers define them on
2-D boxes (CIoU's aspect-ratio term has no 3-D form), and no library of the field ships a 3-D one.

>>> import torch
>>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
>>> generalized_box_iou_loss(b, b, eps=1e-7, reduction="mean").item() < 1e-6
True
"""

from __future__ import annotations

import math

import torch

from ._registry import Equivalent, Input, Param, narrowed, register_loss, require, widened

__all__ = ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]

_INPUTS = (
    Input(
        "boxes1", "prediction", differentiable=True, aliases=("y_pred", "input"),
        doc="boxes (N, 4) or (4), x1 y1 x2 y2 (generalized IoU also (N, 6) or (6), x1 y1 z1 x2 y2 z2)"
    ),
    Input("boxes2", "target", differentiable=True, aliases=("y_true", "target"), doc="boxes, same shape"),
)
_REFUSES = ("boxes1 not (N, 4) or (4)", "boxes2 shaped unlike boxes1", "a box with x1 > x2 or y1 > y2")
_PARAMS = (
    Param("reduction", "string", "mean", "'none' (one loss per box), 'mean' (default here; torchvision's is 'none'; "
          "0 for no boxes) or 'sum'.", choices=("none", "mean", "sum")),
    Param("eps", "float", 1e-7, "Keeps the divisions finite.", min=0.0),
)


def _example(dt: torch.dtype) -> dict[str, object]:
    return {"boxes1": torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]], dtype=dt),
            "boxes2": torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.5, 0.5, 3.0, 3.5], [2.0, 2.0, 3.0, 3.0]], dtype=dt)}


def _check(boxes1: torch.Tensor, boxes2: torch.Tensor, strict: bool, three_d: bool = False) -> None:
    sizes = (4, 6) if three_d else (4,)
    shapes = "(N, 4) or (4), or 3-D boxes (N, 6) or (6)" if three_d else "(N, 4) or (4)"
    require(boxes1.dim() in (1, 2) and boxes1.shape[-1] in sizes, "inputs.boxes1",
            f"must be {shapes}, got shape {list(boxes1.shape)}")
    require(boxes2.shape == boxes1.shape, "inputs.boxes2",
            f"shape {list(boxes2.shape)} must equal boxes1's {list(boxes1.shape)} (one target per box)")
    d = boxes1.shape[-1] // 2
    axes = "xyz"[:d]
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        lo, hi = b[..., :d], b[..., d:]
        ok = (hi > lo) if strict else (hi >= lo)
        op = "<" if strict else "<="
        rule = " and ".join(f"{a}1 {op} {a}2" for a in axes)
        corners = ", ".join([f"{a}1" for a in axes] + [f"{a}2" for a in axes])
        require(bool(ok.all()), f"inputs.{name}", f"boxes must be ({corners}) with {rule}")


def _iou_and_enclosure(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float, masked: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(iou, union, enclosing box area (volume in 3-D), enclosing box corners (2-D only, else empty)).

    The two forms of the intersection have the same value and differ where an overlap's side is exactly 0
    (touching boxes, a box of zero width): its sides clamped at 0 (``masked`` false: MONAI's box_pair_giou;
    the clamp's subgradient at 0 lets the other side through) or the product kept only where both sides are
    ``> 0`` (``masked``, 2-D: torchvision.ops' ``_loss_inter_union``; no gradient there).

    >>> a, b = torch.tensor([0.0, 0.0, 1.0, 1.0], requires_grad=True), torch.tensor([1.0, 0.0, 2.0, 1.0])
    >>> [torch.autograd.grad(_iou_and_enclosure(a, b, 0.0, m)[0], a)[0][2].item() for m in (False, True)]
    [0.5, 0.0]
    """
    if boxes1.shape[-1] == 6:
        lo1, hi1, lo2, hi2 = boxes1[..., :3], boxes1[..., 3:], boxes2[..., :3], boxes2[..., 3:]
        inter = (torch.minimum(hi1, hi2) - torch.maximum(lo1, lo2)).clamp_min(0).prod(-1)
        union = (hi1 - lo1).prod(-1) + (hi2 - lo2).prod(-1) - inter
        enclosure = (torch.maximum(hi1, hi2) - torch.minimum(lo1, lo2)).prod(-1)
        return inter / (union + eps), union, enclosure, ()
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    w = torch.minimum(x2, u2) - torch.maximum(x1, u1)
    h = torch.minimum(y2, v2) - torch.maximum(y1, v1)
    if masked:
        inter = torch.where((w > 0) & (h > 0), w * h, torch.zeros_like(w))
    else:
        inter = w.clamp_min(0) * h.clamp_min(0)
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    iou = inter / (union + eps)
    corners = (torch.minimum(x1, u1), torch.minimum(y1, v1), torch.maximum(x2, u2), torch.maximum(y2, v2))
    area_c = (corners[2] - corners[0]) * (corners[3] - corners[1])
    return iou, union, area_c, corners


def _reduce(loss: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    """``loss`` reduced, then cast to ``dtype`` where that is a half type (computed in float32: :func:`_widened`)."""
    if reduction == "mean":
        loss = loss.mean() if loss.numel() else loss.sum() * 0
    elif reduction == "sum":
        loss = loss.sum()
    return narrowed(loss, dtype)


def _widened(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Both boxes in float32 where half (areas past 65504 overflowed float16: inf - inf), and the dtype torch would
    have given the loss."""
    return widened(boxes1), widened(boxes2), torch.promote_types(boxes1.dtype, boxes2.dtype)


def _center_term(
    boxes1: torch.Tensor, boxes2: torch.Tensor, corners: tuple[torch.Tensor, ...], eps: float
) -> torch.Tensor:
    """Squared distance of the centres over the squared diagonal of the enclosing box."""
    cx1, cy1, cx2, cy2 = corners
    diagonal = (cx2 - cx1) ** 2 + (cy2 - cy1) ** 2 + eps
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    return (((x1 + x2) - (u1 + u2)) ** 2 + ((y1 + y2) - (v1 + v2)) ** 2) / 4 / diagonal


@register_loss(
    "generalized_box_iou_loss",
    aliases=("GIoULoss", "giou_loss", "generalized_iou_loss"),
    refuses=_REFUSES,
    inputs=_INPUTS, params=_PARAMS,
    description="1 - GIoU: 1 - IoU + (area of the enclosing box not covered by the union) / (enclosing area); "
    "2-D boxes or 3-D boxes (volumes).",
    source="lossd (Rezatofighi et al. 2019; torchvision.ops.generalized_box_iou_loss formula)",
    notes="Where a side of the overlap is exactly 0 (touching boxes, a box of zero width or height) the gradient is "
    "MONAI's BoxGIoULoss's: the overlap's sides are clamped at 0, and the clamp's subgradient there lets the other "
    "side's through. torchvision.ops.generalized_box_iou_loss counts the intersection only where both sides are > 0, "
    "so its gradient there differs (the value does not); distance_box_iou_loss and complete_box_iou_loss, which "
    "only torchvision defines, follow torchvision.",
    example=_example,
    equivalents=(Equivalent("torchvision.ops.generalized_box_iou_loss(boxes1, boxes2, reduction='mean')", {}, ""),
                 Equivalent("monai.losses.BoxGIoULoss()", {"eps": 1.1920928955078125e-07},
                            "2-D boxes (N, 4) in MONAI's StandardMode (x1 y1 x2 y2); MONAI computes in float32"),
                 Equivalent("monai.losses.BoxGIoULoss() on 3-D boxes", {"eps": 1.1920928955078125e-07},
                            "3-D boxes (N, 6) in MONAI's StandardMode (x1 y1 z1 x2 y2 z2); MONAI computes in float32")),
)
def generalized_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, *, reduction: str, eps: float) -> torch.Tensor:
    """``1 - (IoU - (C - U) / (C + eps))``, ``IoU = I / (U + eps)``; C the enclosing box's area (volume)."""
    _check(boxes1, boxes2, strict=False, three_d=True)
    boxes1, boxes2, dtype = _widened(boxes1, boxes2)
    iou, union, area_c, _ = _iou_and_enclosure(boxes1, boxes2, eps)
    return _reduce(1 - iou + (area_c - union) / (area_c + eps), reduction, dtype)


@register_loss(
    "distance_box_iou_loss",
    aliases=("DIoULoss", "diou_loss", "distance_iou_loss"),
    refuses=_REFUSES,
    inputs=_INPUTS, params=_PARAMS,
    description="1 - DIoU: 1 - IoU + (distance of the centres)² / (diagonal of the enclosing box)².",
    source="lossd (Zheng et al. 2020; torchvision.ops.distance_box_iou_loss formula)",
    notes="Where a side of the overlap is exactly 0 (touching boxes, a box of zero width or height) the gradient is "
    "torchvision's: the intersection counts only where both sides are > 0, so it gives no gradient there "
    "(generalized_box_iou_loss follows MONAI instead).",
    example=_example,
    equivalents=(Equivalent("torchvision.ops.distance_box_iou_loss(boxes1, boxes2, reduction='mean')", {}, ""),),
)
def distance_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, *, reduction: str, eps: float) -> torch.Tensor:
    """``1 - IoU + d² / (c² + eps)``: d between the centres, c the enclosing box's diagonal."""
    _check(boxes1, boxes2, strict=False)
    boxes1, boxes2, dtype = _widened(boxes1, boxes2)
    iou, _, _, corners = _iou_and_enclosure(boxes1, boxes2, eps, masked=True)
    return _reduce(1 - iou + _center_term(boxes1, boxes2, corners, eps), reduction, dtype)


@register_loss(
    "complete_box_iou_loss",
    aliases=("CIoULoss", "ciou_loss", "complete_iou_loss"),
    refuses=(*_REFUSES[:2], "a box with x1 >= x2 or y1 >= y2 (its aspect ratio is undefined)"),
    inputs=_INPUTS, params=_PARAMS,
    description="1 - CIoU: DIoU loss + alpha·v, v the aspect-ratio mismatch, alpha = v / (1 - IoU + v) (no gradient).",
    source="lossd (Zheng et al. 2020; torchvision.ops.complete_box_iou_loss formula)",
    notes="Where a side of the overlap is exactly 0 (touching boxes) the gradient is torchvision's: the "
    "intersection counts only where both sides are > 0, so it gives no gradient there "
    "(generalized_box_iou_loss follows MONAI instead).",
    example=_example,
    equivalents=(Equivalent("torchvision.ops.complete_box_iou_loss(boxes1, boxes2, reduction='mean')", {}, ""),),
)
def complete_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, *, reduction: str, eps: float) -> torch.Tensor:
    """DIoU loss ``+ alpha·v``, ``v = 4/π² (atan(w2/h2) - atan(w1/h1))²``, ``alpha = v / (1 - IoU + v + eps)``
    treated as a constant (no gradient), as in the paper and torchvision."""
    _check(boxes1, boxes2, strict=True)
    boxes1, boxes2, dtype = _widened(boxes1, boxes2)
    iou, _, _, corners = _iou_and_enclosure(boxes1, boxes2, eps, masked=True)
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    v = (4 / math.pi**2) * (torch.atan((u2 - u1) / (v2 - v1)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + _center_term(boxes1, boxes2, corners, eps) + alpha * v, reduction, dtype)
