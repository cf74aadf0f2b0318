"""The boundary loss (Kervadec et al. 2019): probabilities weighted by the target's signed distance map.

The map is negative inside each class's region and positive outside: ``d(outside pixel, region)``
outside, ``1 - d(inside pixel, complement)`` inside (0 on the innermost boundary ring), and 0 for a
class that is absent or fills the whole image (MONAI's BoundaryLoss, Kervadec's ``one_hot2dist``).
It is computed here in torch, exactly (the Euclidean distance transforms of ``_image.py``), unless
the request sends it as the input ``distance``, as Kervadec's data loaders do.

>>> import torch
>>> signed_distance_map(torch.tensor([[False, True, True, False, False]])).tolist()
[[1.0, 0.0, 0.0, 1.0, 2.0]]
"""

from __future__ import annotations

import torch

from ._image import MAX_DISTANCE_WORK, _squared_distance_to  # exact Euclidean distance transforms
from ._overlap import _probabilities  # activations, one-hot targets and their checks, as the overlap losses
from ._registry import Equivalent, Input, Param, register_loss, require

__all__ = ["boundary_loss", "signed_distance_map"]


def signed_distance_map(mask: torch.Tensor) -> torch.Tensor:
    """For (B, *spatial) booleans: outside each mask its distance to the mask, inside ``1 -`` its distance to
    the outside; all zeros for a mask that is empty or full."""
    outside = _squared_distance_to(mask).sqrt()
    inside = _squared_distance_to(~mask).sqrt()
    signed = torch.where(mask, 1 - inside, outside)
    flat = mask.reshape(mask.shape[0], -1)
    mixed = (flat.any(1) & ~flat.all(1)).view(-1, *([1] * (mask.dim() - 1)))
    return torch.where(mixed, signed, torch.zeros_like(signed))


@register_loss(
    "boundary_loss",
    aliases=("BoundaryLoss",),
    refuses=(
        "an input that is not (N, C, *spatial) with 1 to 3 spatial dimensions",
        "targets not shaped as mode says (a mask shaped like input; multiclass: class indices (N, *) or one-hot), "
        "outside [0, 1] or outside [0, C)",
        "probabilities outside [0, 1] with from_logits false",
        "a distance map not shaped like input",
        "include_background false with one channel",
        f"distance transforms of more than {MAX_DISTANCE_WORK} steps (N·C·pixels·Σ sides)",
    ),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred", "probs"),
              doc="probabilities (or logits with from_logits) (N, C, *spatial), 1 to 3 spatial dimensions"),
        Input("target", "target", kind="float|int", aliases=("y_true",),
              doc="0/1 masks shaped like input, or class indices (N, *spatial) with mode 'multiclass'"),
        Input("distance", "element weight", required=False, aliases=("dist_maps",),
              doc="signed distance maps shaped like input (Kervadec's dist_maps); absent: computed from target"),
    ),
    params=(
        Param("mode", "string", "multilabel", "'multilabel' (channels independent, sigmoid), 'multiclass' (softmax, "
              "class-index or one-hot targets) or 'binary' (C = 1).", choices=("binary", "multiclass", "multilabel")),
        Param("from_logits", "bool", False, "Apply sigmoid/softmax first (MONAI sigmoid/softmax; default: the input "
              "holds probabilities, as in Kervadec's SurfaceLoss and MONAI's default)."),
        Param("include_background", "bool", True, "false: leave channel 0 out (Kervadec's idc=[1] for two classes)."),
        Param("aggregation", "string", "per_sample", "'per_sample': mean over space per sample and channel (MONAI "
              "batch=False); 'pooled': over batch and space per channel (batch=True).",
              choices=("per_sample", "pooled")),
        Param("reduction", "string", "mean", "'mean' (of p·distance over every element: Kervadec's), 'sum' of the "
              "units, or 'none': (N, C) per_sample, (C) pooled.", choices=("none", "mean", "sum")),
    ),
    description="Boundary loss (Kervadec et al. 2019): mean of p · (signed distance map of the target), negative "
    "inside the target's regions.",
    source="lossd (Kervadec et al. 2019; MONAI BoundaryLoss conventions; distance maps in torch)",
    notes=f"The maps are exact Euclidean distance transforms of (t > 0.5), without gradient; the work is bounded: "
    f"N·C·pixels·Σ sides at most {MAX_DISTANCE_WORK} (INVALID_ARGUMENT past it; send the input distance instead). "
    "The loss is negative when the prediction fills the target.",
    example=lambda dt: {
        "input": torch.tensor([[[[0.9, 0.8, 0.1], [0.7, 0.3, 0.2], [0.1, 0.2, 0.6]]]], dtype=dt),
        "target": torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]], dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.BoundaryLoss(softmax=True, to_onehot_y=True)", {"mode": "multiclass",
                   "from_logits": True}, "target (N, *) class indices (MONAI: (N, 1, *))"),
        Equivalent("monai.losses.BoundaryLoss(sigmoid=True, include_background=False, batch=True, reduction='none')",
                   {"from_logits": True, "include_background": False, "aggregation": "pooled", "reduction": "none"},
                   "masks (N, C, *)"),
        Equivalent("monai.losses.BoundaryLoss()", {}, "probabilities and masks (N, C, H, W, D)"),
    ),
)
def boundary_loss(input: torch.Tensor, target: torch.Tensor, distance: torch.Tensor | None = None, *, mode: str,
                  from_logits: bool, include_background: bool, aggregation: str, reduction: str) -> torch.Tensor:
    """``mean_space(p · φ(t))`` per sample and channel (or channel), ``φ`` the signed distance map."""
    require(input.dim() in (3, 4, 5), "inputs.input",
            f"must be (N, C, *spatial) with 1 to 3 spatial dimensions, got shape {list(input.shape)}")
    require(mode != "binary" or input.shape[1] == 1, "inputs.input", f"mode 'binary' needs one channel, got "
            f"{input.shape[1]}")
    if distance is not None:
        require(distance.shape == input.shape, "inputs.distance",
                f"shape {list(distance.shape)} must equal input's {list(input.shape)}")
    else:
        spatial = input.shape[2:]
        work = input.numel() * sum(spatial)
        require(work <= MAX_DISTANCE_WORK, "inputs.input", f"distance transforms of shape {list(input.shape)} take "
                f"{work} steps (N·C·pixels·Σ sides); at most {MAX_DISTANCE_WORK} are allowed (or send distance)")
    probs, onehot = _probabilities(input, target, mode, from_logits, None)
    n, c = probs.shape[:2]
    if distance is None:
        with torch.no_grad():
            field = signed_distance_map((onehot > 0.5).reshape(n * c, *input.shape[2:])).reshape(n, c, -1)
        field = field.to(input.dtype)
    else:
        field = distance.reshape(n, c, -1).to(input.dtype)
    if not include_background:
        require(c > 1, "params.include_background", "needs more than one channel")
        probs, field = probs[:, 1:], field[:, 1:]
    per_pixel = probs * field
    loss = per_pixel.mean(dim=2) if aggregation == "per_sample" else per_pixel.mean(dim=(0, 2))
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)
