"""Box IoU losses: torchvision.ops' published formulas, box by box."""

from __future__ import annotations

import math

import torch

from support.parity import Case, Reference, rand


def _per_box(kind):
    def ref(t, p):
        eps = p.get("eps", 1e-7)
        rows = []
        for a, b in zip(t["boxes1"].reshape(-1, 4), t["boxes2"].reshape(-1, 4)):
            x1, y1, x2, y2 = a
            u1, v1, u2, v2 = b
            iw, ih = torch.min(x2, u2) - torch.max(x1, u1), torch.min(y2, v2) - torch.max(y1, v1)
            inter = iw * ih if (iw > 0 and ih > 0) else iw * 0
            union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
            iou = inter / (union + eps)
            cw, ch = torch.max(x2, u2) - torch.min(x1, u1), torch.max(y2, v2) - torch.min(y1, v1)
            if kind == "giou":
                rows.append(1 - (iou - (cw * ch - union) / (cw * ch + eps)))
                continue
            d2 = ((x1 + x2) / 2 - (u1 + u2) / 2) ** 2 + ((y1 + y2) / 2 - (v1 + v2) / 2) ** 2
            loss = 1 - iou + d2 / (cw ** 2 + ch ** 2 + eps)
            if kind == "ciou":
                v = (4 / math.pi ** 2) * (torch.atan((u2 - u1) / (v2 - v1)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
                alpha = (v / (1 - iou + v + eps)).detach()
                loss = loss + alpha * v
            rows.append(loss)
        loss = torch.stack(rows).reshape(t["boxes1"].shape[:-1])
        red = p.get("reduction", "mean")
        return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)

    return ref


def giou_3d(t, p):
    """GIoU of 3-D boxes (x1, y1, z1, x2, y2, z2), box by box: volumes for areas (MONAI's box_pair_giou)."""
    eps = p.get("eps", 1e-7)
    rows = []
    for a, b in zip(t["boxes1"].reshape(-1, 6), t["boxes2"].reshape(-1, 6)):
        sides = [torch.min(a[k + 3], b[k + 3]) - torch.max(a[k], b[k]) for k in range(3)]
        inter = sides[0] * sides[1] * sides[2] if all(s > 0 for s in sides) else sides[0] * 0
        vol_a = (a[3] - a[0]) * (a[4] - a[1]) * (a[5] - a[2])
        vol_b = (b[3] - b[0]) * (b[4] - b[1]) * (b[5] - b[2])
        union = vol_a + vol_b - inter
        c = [torch.max(a[k + 3], b[k + 3]) - torch.min(a[k], b[k]) for k in range(3)]
        enclosure = c[0] * c[1] * c[2]
        rows.append(1 - (inter / (union + eps) - (enclosure - union) / (enclosure + eps)))
    loss = torch.stack(rows).reshape(t["boxes1"].shape[:-1])
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def _ref_giou(t, p):
    return (giou_3d if t["boxes1"].shape[-1] == 6 else _per_box("giou"))(t, p)


def boxes_3d(n, seed, dt):
    corner = rand(n, 3, dtype=torch.float64, seed=seed, high=4.0)
    size = rand(n, 3, dtype=torch.float64, seed=seed + 100, low=0.5, high=3.0)
    return torch.cat([corner, corner + size], 1).to(dt)


def _boxes(n, seed, dt):
    corner = rand(n, 2, dtype=torch.float64, seed=seed, high=4.0)
    size = rand(n, 2, dtype=torch.float64, seed=seed + 100, low=0.5, high=3.0)
    return torch.cat([corner, corner + size], 1).to(dt)


REFERENCES = {
    "generalized_box_iou_loss": Reference(_ref_giou, None, exact=False),
    "distance_box_iou_loss": Reference(_per_box("diou"), None, exact=False),
    "complete_box_iou_loss": Reference(_per_box("ciou"), None, exact=False),
}

CASES = {
    name: [
        Case("boxes", lambda dt: {"boxes1": _boxes(5, 1, dt), "boxes2": _boxes(5, 2, dt)}),
        Case("one-box", lambda dt: {"boxes1": _boxes(1, 3, dt)[0], "boxes2": _boxes(1, 4, dt)[0]}, reductions=("none",)),
    ]
    for name in REFERENCES
}
CASES["generalized_box_iou_loss"] += [
    Case("3d-boxes", lambda dt: {"boxes1": boxes_3d(5, 5, dt), "boxes2": boxes_3d(5, 6, dt)}),
    Case("3d-one-box", lambda dt: {"boxes1": boxes_3d(1, 7, dt)[0], "boxes2": boxes_3d(1, 8, dt)[0]}, reductions=("none",)),
]
