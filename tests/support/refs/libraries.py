"""Each "same numbers as the library" row of docs/losses.md, checked.

``CHECKS`` maps a row's library call (as written in the registry's ``Equivalent``) to a
function returning ``(tensors, library)``: the lossd inputs, and a callable computing the
library's loss from those tensors. kornia and MONAI rows call the libraries themselves
(they are in the dev extra); segmentation_models_pytorch, pytorch-toolbelt and torchvision
do not install beside the pinned CPU torch, so their rows call references written from
those libraries' published formulas (the ``smp_*`` / ``toolbelt_*`` functions here, and
``refs/boxes.py``, ``refs/lovasz.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from support.parity import rand, randint, randn
from support.refs import boxes as box_refs
from support.refs import image as image_refs
from support.refs import lovasz as lovasz_refs
from support.refs.custom import mcc as mcc_ref

F64 = torch.float64


def _onehot(y, c):
    return F.one_hot(y, c).movedim(-1, 1).to(F64)


def _soft_ones(*shape, seed):
    """Soft labels with every third element exactly 1."""
    t = rand(*shape, dtype=F64, seed=seed).reshape(-1)
    t[::3] = 1.0
    return t.reshape(shape)


def _mask(*shape, seed):
    return (rand(*shape, dtype=F64, seed=seed) > 0.5).to(F64)


def smp_overlap(x, y, *, mode, alpha=0.5, beta=0.5, gamma=1.0, smooth=0.0, eps=1e-7, log_loss=False, classes=None,
                ignore_index=None, class_weights=None, from_logits=True):
    """segmentation_models_pytorch 0.6 DiceLoss / JaccardLoss / TverskyLoss, from its source's formulas."""
    bs = y.shape[0]
    if from_logits:
        x = x.log_softmax(1).exp() if mode == "multiclass" else F.logsigmoid(x).exp()
    c = x.shape[1]
    if mode == "binary":
        t, p = y.reshape(bs, 1, -1), x.reshape(bs, 1, -1)
        if ignore_index is not None:
            m = t != ignore_index
            p, t = p * m, t * m
    elif mode == "multiclass":
        t, p = y.reshape(bs, -1), x.reshape(bs, c, -1)
        if ignore_index is not None:
            m = t != ignore_index
            p = p * m.unsqueeze(1)
            t = F.one_hot((t * m).long(), c).permute(0, 2, 1) * m.unsqueeze(1)
        else:
            t = F.one_hot(t, c).permute(0, 2, 1)
    else:
        t, p = y.reshape(bs, c, -1), x.reshape(bs, c, -1)
        if ignore_index is not None:
            m = t != ignore_index
            p, t = p * m, t * m
    t = t.to(p.dtype)
    ps, ts = p.sum((0, 2)), t.sum((0, 2))
    inter = (ps + ts - (p - t).abs().sum((0, 2))) / 2
    score = (inter + smooth) / (inter + alpha * (ps - inter) + beta * (ts - inter) + smooth).clamp_min(eps)
    loss = -torch.log(score.clamp_min(eps)) if log_loss else 1.0 - score
    loss = loss * (ts > 0).to(loss.dtype)
    w = None if class_weights is None else torch.tensor(class_weights, dtype=loss.dtype)
    if classes is not None:
        loss = loss[classes]
        w = None if w is None else w[classes]
    out = loss.mean() if w is None else (loss * w).sum() / w.sum()
    return out ** gamma


def toolbelt_overlap(x, y, *, mode, jaccard=False):
    """pytorch-toolbelt DiceLoss / JaccardLoss: Σ p·t, empty classes zeroed."""
    bs, c = x.shape[0], x.shape[1]
    p = x.softmax(1) if mode == "multiclass" else torch.sigmoid(x)
    t = F.one_hot(y.reshape(bs, -1), c).permute(0, 2, 1).to(F64) if mode == "multiclass" else y.reshape(bs, c, -1)
    p = p.reshape(bs, c, -1)
    inter, card = (p * t).sum((0, 2)), (p + t).sum((0, 2))
    score = inter / (card - inter).clamp_min(1e-7) if jaccard else 2 * inter / card.clamp_min(1e-7)
    return ((1 - score) * (t.sum((0, 2)) > 0)).mean()


def smp_focal(x, y, *, alpha=None, gamma=2.0, from_logits=True, normalized=False, reduced_threshold=None,
              reduction="mean", eps=1e-7):
    """smp FocalLoss (binary/multilabel): p_t = exp(-BCE) on logits; probabilities clamped and turned into logits."""
    if not from_logits:
        x = torch.clamp(x, eps, 1 - eps)
        x = torch.log(x / (1 - x))
    logpt = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    pt = torch.exp(-logpt)
    if reduced_threshold is None:
        focal = (1.0 - pt).pow(gamma)
    else:
        focal = torch.where(pt < reduced_threshold, torch.ones_like(pt), ((1.0 - pt) / reduced_threshold).pow(gamma))
    loss = focal * logpt
    if alpha is not None:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    if normalized:
        loss = loss / focal.sum().clamp_min(1e-6)
    return loss.mean() if reduction == "mean" else loss.sum()


def smp_focal_multiclass(x, y, *, ignore_index=None):
    """smp FocalLoss(mode='multiclass'): per class, a binary focal loss (p_t = exp(-BCE)) of logit x_c against
    [y == c] over the pixels not ignored, averaged; then the mean over classes."""
    keep = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    losses = [smp_focal(x[:, c][keep], (y[keep] == c).to(x.dtype)) for c in range(x.shape[1])]
    return torch.stack(losses).mean()


def toolbelt_focal(x, y, *, gamma=2.0, ignore_index=-100, softmax=True):
    """pytorch-toolbelt 0.8: FocalLoss (= CrossEntropyFocalLoss) with softmax=True: the focal factor's p from the
    softmax over classes, BCE with logits per class, summed over classes, ignored pixels zeroed, mean over every
    pixel. BinaryFocalLoss (softmax=False): sigmoid p_t per element, ignored elements zeroed, mean over elements."""
    keep = y != ignore_index
    onehot = _onehot(torch.where(keep, y, torch.zeros_like(y)), x.shape[1])
    p = torch.softmax(x, 1) if softmax else torch.sigmoid(x)
    one_minus_pt = (1 - onehot) * p + onehot * (1 - p)
    loss = one_minus_pt ** gamma * F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
    if softmax:
        return (loss.sum(1) * keep).mean()
    return (loss * keep.unsqueeze(1)).mean()


def wing(x, y, width, curvature):
    d = (y - x).abs()
    c = width - width * math.log(1 + width / curvature)
    return torch.where(d < width, width * torch.log1p(d / curvature), d - c).mean()


def _seg(c=3, seed=1):
    return {"input": randn(2, c, 4, 4, dtype=F64, seed=seed), "target": randint(c, 2, 4, 4, seed=seed + 1)}


def _seg_absent(seed=1):
    """(3, 3, 4, 4) logits and class indices that leave classes out of samples, where kornia's 'macro' Dice skips
    them (_seg's random labels nearly always hold every class): sample 0 has no class 2, sample 1 only class 1, and
    sample 2 has a row of kornia's ignore_index -100."""
    target = randint(3, 3, 4, 4, seed=seed + 1)
    target[0][target[0] == 2] = 0
    target[1] = 1
    target[2, 0] = -100
    return {"input": randn(3, 3, 4, 4, dtype=F64, seed=seed), "target": target}


def _ml(c=3, seed=1):
    return {"input": randn(2, c, 4, 4, dtype=F64, seed=seed), "target": _mask(2, c, 4, 4, seed=seed + 1)}


_GWDL_M = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]], dtype=F64)


def _p2(n, c, *spatial, seed):
    """(N, 2, *) probabilities: background 1 - p, foreground p."""
    fore = rand(n, 1, *spatial, dtype=F64, seed=seed, low=0.02, high=0.98)
    return torch.cat([1 - fore, fore], 1)


def _unified():
    import monai.losses.unified_focal_loss

    return monai.losses.unified_focal_loss


def _aucm(kwargs, seed):
    """Scores, labels and the auxiliary variables, and MONAI's AUCMLoss holding the same a, b, alpha."""
    aux = {"a": torch.tensor(0.3, dtype=F64), "b": torch.tensor(-0.2, dtype=F64), "alpha": torch.tensor(0.7, dtype=F64)}
    tensors = {"input": randn(10, 1, dtype=F64, seed=seed), "target": _mask(10, 1, seed=seed + 1), **aux}

    def library(t):
        module = _monai_losses().AUCMLoss(**kwargs).double()
        with torch.no_grad():
            for name in aux:
                getattr(module, name).copy_(t[name])
        return module(t["input"], t["target"])

    return tensors, library


def _kornia():
    import kornia

    return kornia


def _monai():
    import monai

    return monai


def _monai_losses():
    import monai.losses

    return monai.losses


def _mono(t, c):
    return _onehot(t["target"], c)


CHECKS = {
    # ---- dice_loss
    "segmentation_models_pytorch.losses.DiceLoss(mode='multiclass')":
        lambda: (_seg(), lambda t: smp_overlap(t["input"], t["target"], mode="multiclass")),
    "segmentation_models_pytorch.losses.DiceLoss(mode='binary', smooth=1.0, log_loss=True)":
        lambda: (_ml(1), lambda t: smp_overlap(t["input"], t["target"], mode="binary", smooth=1.0, log_loss=True)),
    "segmentation_models_pytorch.losses.DiceLoss(mode='multilabel', classes=[1, 2], ignore_index=-1, "
    "class_weights=[1.0, 2.0, 3.0])":
        lambda: ({"input": randn(2, 3, 5, dtype=F64, seed=3),
                  "target": torch.tensor([[[1.0, 0, -1, 1, 0], [0, 1, 1, -1, 0], [1, 1, 0, 0, -1]]] * 2, dtype=F64)},
                 lambda t: smp_overlap(t["input"], t["target"], mode="multilabel", classes=[1, 2], ignore_index=-1,
                                       class_weights=[1.0, 2.0, 3.0])),
    "pytorch_toolbelt.losses.DiceLoss(mode='multiclass')":
        lambda: (_seg(), lambda t: toolbelt_overlap(t["input"], t["target"], mode="multiclass")),
    "kornia.losses.dice_loss(pred, target)":
        lambda: (_seg(), lambda t: _kornia().losses.dice_loss(t["input"], t["target"])),
    "kornia.losses.dice_loss(pred, target, weight=w)":
        lambda: (_seg_absent(), lambda t: _kornia().losses.dice_loss(t["input"], t["target"],
                                                                      weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64))),
    "kornia.losses.dice_loss(pred, target, average='macro', weight=w)":
        lambda: (_seg_absent(), lambda t: _kornia().losses.dice_loss(t["input"], t["target"], average="macro",
                                                                      weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64))),
    "monai.losses.DiceLoss(softmax=True, to_onehot_y=True)":
        lambda: (_seg(), lambda t: _monai_losses().DiceLoss(softmax=True, to_onehot_y=True)(t["input"], t["target"].unsqueeze(1))),
    "monai.losses.DiceLoss(sigmoid=True, batch=True, squared_pred=True, include_background=False)":
        lambda: (_ml(), lambda t: _monai_losses().DiceLoss(sigmoid=True, batch=True, squared_pred=True,
                                                          include_background=False)(t["input"], t["target"])),
    "monai.losses.DiceLoss(sigmoid=True, soft_label=True, reduction='none')":
        lambda: ({"input": randn(2, 3, 4, 4, dtype=F64, seed=5), "target": rand(2, 3, 4, 4, dtype=F64, seed=6)},
                 lambda t: _monai_losses().DiceLoss(sigmoid=True, soft_label=True, reduction="none")(
                     t["input"], t["target"]).reshape(2, 3)),
    "monai.losses.MaskedDiceLoss(softmax=True)":
        lambda: ({"input": randn(2, 3, 4, 4, dtype=F64, seed=1), "target": _onehot(randint(3, 2, 4, 4, seed=2), 3),
                  "mask": _mask(2, 1, 4, 4, seed=48)},
                 lambda t: _monai_losses().MaskedDiceLoss(softmax=True)(t["input"], t["target"], mask=t["mask"])),
    "monai.losses.MaskedDiceLoss(softmax=True, to_onehot_y=True)":
        lambda: ({"input": randn(2, 3, 4, 4, dtype=F64, seed=73), "target": randint(3, 2, 4, 4, seed=74),
                  "mask": _mask(2, 1, 4, 4, seed=75)},
                 lambda t: _monai_losses().MaskedDiceLoss(softmax=True, to_onehot_y=True)(
                     t["input"], t["target"].unsqueeze(1), mask=t["mask"])),
    "monai.losses.LogHausdorffDTLoss(sigmoid=True, include_background=True)":
        lambda: ({"input": randn(2, 2, 5, 4, dtype=F64, seed=49), "target": _mask(2, 2, 5, 4, seed=50)},
                 lambda t: _monai_losses().LogHausdorffDTLoss(sigmoid=True, include_background=True)(t["input"], t["target"])),
    "monai.losses.DiceLoss(softmax=True, to_onehot_y=True, weight=w)":
        lambda: (_seg(), lambda t: _monai_losses().DiceLoss(softmax=True, to_onehot_y=True, weight=[1.5, 3.0, 6.0])(
            t["input"], t["target"].unsqueeze(1))),
    # ---- generalized_wasserstein_dice_loss
    "monai.losses.GeneralizedWassersteinDiceLoss(dist_matrix=M)":
        lambda: (_seg() | {"dist_matrix": _GWDL_M},
                 lambda t: _monai_losses().GeneralizedWassersteinDiceLoss(dist_matrix=_GWDL_M)(t["input"], t["target"])),
    "monai.losses.GeneralizedWassersteinDiceLoss(dist_matrix=M, weighting_mode='GDL', reduction='none')":
        lambda: (_seg(seed=76) | {"dist_matrix": _GWDL_M},
                 lambda t: _monai_losses().GeneralizedWassersteinDiceLoss(dist_matrix=_GWDL_M, weighting_mode="GDL",
                                                                          reduction="none")(t["input"], t["target"])),
    # ---- soft_cldice_loss, soft_dice_cldice_loss
    "monai.losses.SoftclDiceLoss()":
        lambda: ({"input": rand(2, 2, 7, 6, dtype=F64, seed=77, low=0.01, high=0.99), "target": _mask(2, 2, 7, 6, seed=78)},
                 lambda t: _monai_losses().SoftclDiceLoss()(t["input"], t["target"])),
    "monai.losses.SoftclDiceLoss(iter_=2, softmax=True, to_onehot_y=True, include_background=False)":
        lambda: ({"input": randn(2, 3, 5, 4, 6, dtype=F64, seed=79), "target": randint(3, 2, 5, 4, 6, seed=80)},
                 lambda t: _monai_losses().SoftclDiceLoss(iter_=2, softmax=True, to_onehot_y=True, include_background=False)(
                     t["input"], t["target"].unsqueeze(1))),
    "monai.losses.SoftDiceclDiceLoss()":
        lambda: ({"input": rand(2, 2, 7, 6, dtype=F64, seed=81, low=0.01, high=0.99), "target": _mask(2, 2, 7, 6, seed=82)},
                 lambda t: _monai_losses().SoftDiceclDiceLoss()(t["input"], t["target"])),
    "monai.losses.SoftDiceclDiceLoss(iter_=5, alpha=0.3, sigmoid=True, reduction='sum')":
        lambda: ({"input": randn(2, 2, 4, 5, 6, dtype=F64, seed=83), "target": _mask(2, 2, 4, 5, 6, seed=84)},
                 lambda t: _monai_losses().SoftDiceclDiceLoss(iter_=5, alpha=0.3, sigmoid=True, reduction="sum")(
                     t["input"], t["target"])),
    # ---- asymmetric_focal_loss, asymmetric_focal_tversky_loss, asymmetric_unified_focal_loss
    "monai.losses.unified_focal_loss.AsymmetricFocalLoss()":
        lambda: ({"input": _p2(2, 2, 4, 5, seed=85), "target": _onehot(randint(2, 2, 4, 5, seed=86), 2)},
                 lambda t: _unified().AsymmetricFocalLoss()(t["input"], t["target"])),
    "monai.losses.unified_focal_loss.AsymmetricFocalLoss(to_onehot_y=True, delta=0.6, gamma=1.5, reduction='sum')":
        lambda: ({"input": _p2(2, 2, 4, 5, seed=87), "target": randint(2, 2, 4, 5, seed=88)},
                 lambda t: _unified().AsymmetricFocalLoss(to_onehot_y=True, delta=0.6, gamma=1.5, reduction="sum")(
                     t["input"], t["target"].unsqueeze(1))),
    "monai.losses.unified_focal_loss.AsymmetricFocalTverskyLoss()":
        lambda: ({"input": _p2(2, 2, 4, 5, seed=89), "target": _onehot(randint(2, 2, 4, 5, seed=90), 2)},
                 lambda t: _unified().AsymmetricFocalTverskyLoss()(t["input"], t["target"])),
    "monai.losses.unified_focal_loss.AsymmetricFocalTverskyLoss(to_onehot_y=True, reduction='none')":
        lambda: ({"input": _p2(2, 2, 4, 5, seed=91), "target": randint(2, 2, 4, 5, seed=92)},
                 lambda t: _unified().AsymmetricFocalTverskyLoss(to_onehot_y=True, reduction="none")(
                     t["input"], t["target"].unsqueeze(1))),
    "monai.losses.AsymmetricUnifiedFocalLoss()":
        lambda: ({"input": rand(2, 1, 4, 5, dtype=F64, seed=93, low=0.02, high=0.98), "target": _mask(2, 1, 4, 5, seed=94)},
                 lambda t: _monai_losses().AsymmetricUnifiedFocalLoss()(t["input"], t["target"])),
    "monai.losses.AsymmetricUnifiedFocalLoss(to_onehot_y=True, weight=0.3, gamma=0.25, delta=0.6)":
        lambda: ({"input": _p2(2, 2, 3, 3, 2, seed=95), "target": randint(2, 2, 3, 3, 2, seed=96)},
                 lambda t: _monai_losses().AsymmetricUnifiedFocalLoss(to_onehot_y=True, weight=0.3, gamma=0.25, delta=0.6)(
                     t["input"], t["target"].unsqueeze(1))),
    # ---- nacl_loss, aucm_loss
    "monai.losses.NACLLoss(classes=3, dim=2)":
        lambda: (_seg(seed=97), lambda t: _monai_losses().NACLLoss(classes=3, dim=2)(t["input"], t["target"])),
    "monai.losses.NACLLoss(classes=3, dim=3, kernel_ops='gaussian', distance_type='l2', alpha=0.5, sigma=0.8)":
        lambda: ({"input": randn(2, 3, 4, 5, 3, dtype=F64, seed=98), "target": randint(3, 2, 4, 5, 3, seed=99)},
                 lambda t: _monai_losses().NACLLoss(classes=3, dim=3, kernel_ops="gaussian", distance_type="l2", alpha=0.5,
                                                    sigma=0.8)(t["input"], t["target"])),
    "monai.losses.AUCMLoss()": lambda: _aucm({}, seed=100),
    "monai.losses.AUCMLoss(margin=0.6, imratio=0.3)": lambda: _aucm({"margin": 0.6, "imratio": 0.3}, seed=101),
    "monai.losses.AUCMLoss(version='v2')": lambda: _aucm({"version": "v2"}, seed=102),
    # ---- jukebox_loss
    "monai.losses.JukeboxLoss(spatial_dims=2)":
        lambda: ({"input": randn(2, 3, 5, 6, dtype=F64, seed=107), "target": randn(2, 3, 5, 6, dtype=F64, seed=108)},
                 lambda t: _monai_losses().JukeboxLoss(spatial_dims=2)(t["input"], t["target"])),
    "monai.losses.JukeboxLoss(spatial_dims=3, fft_signal_size=(2, 6, 4, 4), fft_norm='forward', reduction='sum')":
        lambda: ({"input": randn(2, 2, 5, 4, 3, dtype=F64, seed=109), "target": randn(2, 2, 5, 4, 3, dtype=F64, seed=110)},
                 lambda t: _monai_losses().JukeboxLoss(spatial_dims=3, fft_signal_size=(2, 6, 4, 4), fft_norm="forward",
                                                       reduction="sum")(t["input"], t["target"])),
    # ---- bending_energy_loss, diffusion_loss
    "monai.losses.BendingEnergyLoss()":
        lambda: ({"input": randn(2, 2, 5, 6, dtype=F64, seed=111)}, lambda t: _monai_losses().BendingEnergyLoss()(t["input"])),
    "monai.losses.BendingEnergyLoss(normalize=True, reduction='none')":
        lambda: ({"input": randn(1, 3, 4, 5, 6, dtype=F64, seed=112)},
                 lambda t: _monai_losses().BendingEnergyLoss(normalize=True, reduction="none")(t["input"])),
    "monai.losses.DiffusionLoss()":
        lambda: ({"input": randn(2, 2, 5, 6, dtype=F64, seed=113)}, lambda t: _monai_losses().DiffusionLoss()(t["input"])),
    "monai.losses.DiffusionLoss(normalize=True, reduction='sum')":
        lambda: ({"input": randn(1, 3, 4, 5, 6, dtype=F64, seed=114)},
                 lambda t: _monai_losses().DiffusionLoss(normalize=True, reduction="sum")(t["input"])),
    # ---- local_normalized_cross_correlation_loss
    "monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=2)":
        lambda: ({"input": rand(2, 2, 6, 7, dtype=F64, seed=115), "target": rand(2, 2, 6, 7, dtype=F64, seed=116)},
                 lambda t: _monai_losses().LocalNormalizedCrossCorrelationLoss(spatial_dims=2)(t["input"], t["target"])),
    "monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=5, kernel_type='gaussian', "
    "reduction='none')":
        lambda: ({"input": rand(1, 2, 5, 6, 4, dtype=F64, seed=117), "target": rand(1, 2, 5, 6, 4, dtype=F64, seed=118)},
                 lambda t: _monai_losses().LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=5,
                                                                               kernel_type="gaussian", reduction="none")(
                     t["input"], t["target"])),
    "monai.losses.GlobalMutualInformationLoss()":
        lambda: ({"input": rand(2, 1, 6, 7, dtype=F64, seed=119), "target": rand(2, 1, 6, 7, dtype=F64, seed=120)},
                 lambda t: _monai_losses().GlobalMutualInformationLoss()(t["input"], t["target"])),
    "monai.losses.GlobalMutualInformationLoss(kernel_type='b-spline', num_bins=16, reduction='none')":
        lambda: ({"input": randn(3, 2, 5, dtype=F64, seed=121), "target": randn(3, 2, 5, dtype=F64, seed=122)},
                 lambda t: _monai_losses().GlobalMutualInformationLoss(kernel_type="b-spline", num_bins=16,
                                                                       reduction="none")(t["input"], t["target"])),
    # ---- patch_adversarial_loss
    "monai.losses.PatchAdversarialLoss()(x, target_is_real=True, for_discriminator=True)":
        lambda: ({"input": randn(2, 1, 4, 4, dtype=F64, seed=123)},
                 lambda t: _monai_losses().PatchAdversarialLoss()(t["input"], target_is_real=True, for_discriminator=True)),
    "monai.losses.PatchAdversarialLoss(criterion='bce', reduction='sum')(x, target_is_real=False, for_discriminator=True)":
        lambda: ({"input": randn(2, 1, 4, 4, dtype=F64, seed=124)},
                 lambda t: _monai_losses().PatchAdversarialLoss(criterion="bce", reduction="sum")(
                     t["input"], target_is_real=False, for_discriminator=True)),
    "monai.losses.PatchAdversarialLoss(criterion='hinge')(x, target_is_real=True, for_discriminator=False)":
        lambda: ({"input": randn(2, 1, 4, 4, dtype=F64, seed=125)},
                 lambda t: _monai_losses().PatchAdversarialLoss(criterion="hinge")(
                     t["input"], target_is_real=True, for_discriminator=False)),
    # ---- jaccard_loss
    "segmentation_models_pytorch.losses.JaccardLoss(mode='multiclass', smooth=1.0)":
        lambda: (_seg(), lambda t: smp_overlap(t["input"], t["target"], mode="multiclass", alpha=1.0, beta=1.0, smooth=1.0)),
    "pytorch_toolbelt.losses.JaccardLoss(mode='multilabel')":
        lambda: (_ml(), lambda t: toolbelt_overlap(t["input"], t["target"], mode="multilabel", jaccard=True)),
    "monai.losses.DiceLoss(sigmoid=True, jaccard=True)":
        lambda: (_ml(), lambda t: _monai_losses().DiceLoss(sigmoid=True, jaccard=True)(t["input"], t["target"])),
    # ---- tversky_loss, focal_tversky_loss
    "segmentation_models_pytorch.losses.TverskyLoss(mode='multiclass', alpha=0.3, beta=0.7, gamma=1.5)":
        lambda: (_seg(), lambda t: smp_overlap(t["input"], t["target"], mode="multiclass", alpha=0.3, beta=0.7, gamma=1.5)),
    "kornia.losses.tversky_loss(pred, target, alpha=0.3, beta=0.7)":
        lambda: ({"input": randn(3, 3, 2, 2, dtype=F64, seed=44), "target": torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 0]], [[1, 1], [1, 1]]])}, lambda t: _kornia().losses.tversky_loss(t["input"], t["target"], alpha=0.3, beta=0.7)),
    "monai.losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7)":
        lambda: (_seg(), lambda t: _monai_losses().TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7)(
            t["input"], t["target"].unsqueeze(1))),
    "segmentation_models_pytorch.losses.TverskyLoss(mode='binary', alpha=0.3, beta=0.7, gamma=0.75)":
        lambda: (_ml(1), lambda t: smp_overlap(t["input"], t["target"], mode="binary", alpha=0.3, beta=0.7, gamma=0.75)),
    # ---- generalized_dice_loss, mcc_loss
    "monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)":
        lambda: (_seg(), lambda t: _monai_losses().GeneralizedDiceLoss(softmax=True, to_onehot_y=True)(
            t["input"], t["target"].unsqueeze(1))),
    "monai.losses.GeneralizedDiceLoss(sigmoid=True, w_type='simple', batch=True)":
        lambda: (_ml(), lambda t: _monai_losses().GeneralizedDiceLoss(sigmoid=True, w_type="simple", batch=True)(
            t["input"], t["target"])),
    "segmentation_models_pytorch.losses.MCCLoss()":
        lambda: ({"input": rand(2, 1, 3, 3, dtype=F64, seed=7), "target": _mask(2, 1, 3, 3, seed=8)},
                 lambda t: mcc_ref(t, {})),
    "monai.losses.MCCLoss(sigmoid=True)":
        lambda: (_ml(), lambda t: _monai_losses().MCCLoss(sigmoid=True)(t["input"], t["target"])),
    "monai.losses.MCCLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True, reduction='none')":
        lambda: (_seg(), lambda t: _monai_losses().MCCLoss(softmax=True, to_onehot_y=True, include_background=False,
                                                          batch=True, reduction="none")(t["input"], t["target"].unsqueeze(1))),
    # ---- sigmoid_focal_loss, softmax_focal_loss
    "torchvision.ops.sigmoid_focal_loss(inputs, targets, reduction='mean')":
        lambda: (_ml(), lambda t: _tv_focal(t["input"], t["target"])),
    "kornia.losses.binary_focal_loss_with_logits(pred, target, alpha=0.25, gamma=2.0, reduction='mean', pos_weight=pw)":
        lambda: ({"input": randn(2, 3, 4, dtype=F64, seed=9), "target": rand(2, 3, 4, dtype=F64, seed=10)},
                 lambda t: _kornia().losses.binary_focal_loss_with_logits(
                     t["input"], t["target"], alpha=0.25, gamma=2.0, reduction="mean",
                     pos_weight=torch.tensor([2.0, 0.5, 1.0], dtype=F64))),
    "pytorch_toolbelt.losses.BinaryFocalLoss()":
        lambda: ({"input": randn(2, 1, 5, dtype=F64, seed=63), "target": _mask(2, 1, 5, seed=64)},
                 lambda t: smp_focal(t["input"], t["target"])),
    "segmentation_models_pytorch.losses.FocalLoss(mode='binary', alpha=0.75, from_logits=False)":
        lambda: ({"input": rand(2, 1, 6, dtype=F64, seed=67, low=0.02, high=0.98), "target": _mask(2, 1, 6, seed=68)},
                 lambda t: smp_focal(t["input"], t["target"], alpha=0.75, from_logits=False)),
    "segmentation_models_pytorch.losses.FocalLoss(mode='binary')":
        lambda: ({"input": randn(2, 1, 5, dtype=F64, seed=11), "target": rand(2, 1, 5, dtype=F64, seed=12)},
                 lambda t: smp_focal(t["input"], t["target"])),
    "segmentation_models_pytorch.losses.FocalLoss(mode='multilabel', alpha=0.25, from_logits=False, normalized=True)":
        lambda: ({"input": rand(2, 3, 4, dtype=F64, seed=13, low=0.05, high=0.95), "target": _mask(2, 3, 4, seed=14)},
                 lambda t: smp_focal(t["input"], t["target"], alpha=0.25, from_logits=False, normalized=True)),
    "segmentation_models_pytorch.losses.FocalLoss(mode='binary', reduced_threshold=0.5, reduction='sum')":
        lambda: ({"input": randn(8, dtype=F64, seed=15), "target": _mask(8, seed=16)},
                 lambda t: smp_focal(t["input"], t["target"], reduced_threshold=0.5, reduction="sum")),
    "segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss(smooth_factor=0.1, pos_weight=pw)":
        lambda: (_ml(), lambda t: _smp_soft_bce(t["input"], t["target"], 0.1, [2.0, 0.5, 1.0])),
    "monai.losses.FocalLoss(gamma=2.0, alpha=0.25)":
        lambda: ({"input": randn(2, 3, 4, dtype=F64, seed=17), "target": rand(2, 3, 4, dtype=F64, seed=18)},
                 lambda t: _monai_losses().FocalLoss(gamma=2.0, alpha=0.25)(t["input"], t["target"])),
    "monai.losses.FocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.75])":
        lambda: ({"input": randn(2, 3, 4, 4, dtype=F64, seed=69), "target": _soft_ones(2, 3, 4, 4, seed=70)},
                 lambda t: _monai_losses().FocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.75])(t["input"], t["target"])),
    "monai.losses.FocalLoss(gamma=2.0, alpha=0.25, reduction='sum')":
        lambda: ({"input": randn(2, 3, 3, 2, dtype=F64, seed=71), "target": rand(2, 3, 3, 2, dtype=F64, seed=72)},
                 lambda t: _monai_losses().FocalLoss(gamma=2.0, alpha=0.25, reduction="sum")(t["input"], t["target"])),
    "monai.losses.FocalLoss(gamma=2.0, weight=w)":
        lambda: (_ml(), lambda t: _monai_losses().FocalLoss(gamma=2.0, weight=[1.0, 2.0, 0.5])(t["input"], t["target"])),
    "monai.losses.FocalLoss(gamma=2.0, reduction='sum')":
        lambda: ({"input": randn(2, 3, 2, 2, dtype=F64, seed=45), "target": _mask(2, 3, 2, 2, seed=46)},
                 lambda t: _monai_losses().FocalLoss(gamma=2.0, reduction="sum")(t["input"], t["target"])),
    "segmentation_models_pytorch.losses.FocalLoss(mode='multilabel', class_weights=w)":
        lambda: (_ml(), lambda t: sum(w * smp_focal(t["input"][:, c], t["target"][:, c])
                                      for c, w in enumerate([1.0, 3.0, 2.0])) / 6.0),
    "kornia.losses.BinaryFocalLossWithLogits(alpha=0.25)":
        lambda: ({"input": randn(2, 3, dtype=F64, seed=73), "target": torch.tensor([[1.0, 0.3, -100], [0.0, 1, 0.8]], dtype=F64)},
                 lambda t: _kornia().losses.BinaryFocalLossWithLogits(alpha=0.25)(t["input"], t["target"])),
    "segmentation_models_pytorch.losses.FocalLoss(mode='multiclass', ignore_index=255)":
        lambda: ({"input": randn(2, 3, 2, 3, dtype=F64, seed=70),
                  "target": torch.tensor([[[0, 1, 255], [2, 2, 1]], [[255, 0, 0], [1, 255, 2]]])},
                 lambda t: smp_focal_multiclass(t["input"], t["target"], ignore_index=255)),
    "pytorch_toolbelt.losses.FocalLoss(ignore_index=-1)":
        lambda: ({"input": randn(2, 3, 2, 2, dtype=F64, seed=71), "target": torch.tensor([[[0, 1], [-1, 2]], [[2, -1], [1, 0]]])},
                 lambda t: toolbelt_focal(t["input"], t["target"], ignore_index=-1)),
    "pytorch_toolbelt.losses.BinaryFocalLoss(ignore_index=-1)":
        lambda: ({"input": randn(2, 2, 4, dtype=F64, seed=72), "target": torch.tensor([[0, 1, -1, 1], [1, -1, 0, 0]])},
                 lambda t: toolbelt_focal(t["input"], t["target"], ignore_index=-1, softmax=False)),
    "kornia.losses.binary_focal_loss_with_logits(pred, target, alpha=0.25, gamma=2.0, reduction='mean')":
        lambda: ({"input": randn(2, 2, 2, dtype=F64, seed=47),
                  "target": torch.tensor([[[1.0, -100], [0, 1]], [[-100, 0], [1, 0.5]]], dtype=F64)},
                 lambda t: _kornia().losses.binary_focal_loss_with_logits(t["input"], t["target"], alpha=0.25, gamma=2.0,
                                                                          reduction="mean")),
    "monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0)":
        lambda: (_seg() | {"alpha": torch.full((3,), 1 / 3, dtype=F64)},
                 lambda t: _monai_losses().FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0)(
                     t["input"], t["target"].unsqueeze(1))),
    "kornia.losses.focal_loss(pred, target, alpha=None, gamma=2.0, reduction='sum')":
        lambda: (_seg(), lambda t: _kornia().losses.focal_loss(t["input"], t["target"], alpha=None, gamma=2.0, reduction="sum")),
    "kornia.losses.focal_loss(pred, target, alpha=0.5, weight=w, reduction='mean')":
        lambda: (_seg() | {"alpha": torch.tensor([0.5, 1.0, 0.25], dtype=F64) * 0.5 / 3},
                 lambda t: _kornia().losses.focal_loss(t["input"], t["target"], alpha=0.5, reduction="mean",
                                                       weight=torch.tensor([0.5, 1.0, 0.25], dtype=F64))),
    # ---- robust, wing
    **{f"kornia.losses.{n}(img1, img2, reduction='mean')":
       (lambda n=n: ({"input": 2 * randn(2, 3, dtype=F64, seed=19), "target": randn(2, 3, dtype=F64, seed=20)},
                     lambda t: getattr(_kornia().losses, n)(t["input"], t["target"], reduction="mean")))
       for n in ("charbonnier_loss", "welsch_loss", "cauchy_loss", "geman_mcclure_loss")},
    "pytorch_toolbelt.losses.LogCoshLoss()":
        lambda: ({"input": 30 * randn(3, 4, dtype=F64, seed=65), "target": randn(3, 4, dtype=F64, seed=66)},
                 lambda t: (lambda d: (d + F.softplus(-2.0 * d) - math.log(2.0)).mean())(t["input"] - t["target"])),
    "pytorch_toolbelt.losses.WingLoss(width=5, curvature=0.5, reduction='mean')":
        lambda: ({"input": 4 * randn(3, 4, dtype=F64, seed=21), "target": randn(3, 4, dtype=F64, seed=22)},
                 lambda t: wing(t["input"], t["target"], 5.0, 0.5)),
    "segmentation_models_pytorch.losses._functional.wing_loss(output, target, width=2, curvature=1)":
        lambda: ({"input": 4 * randn(3, 4, dtype=F64, seed=23), "target": randn(3, 4, dtype=F64, seed=24)},
                 lambda t: wing(t["input"], t["target"], 2.0, 1.0)),
    # ---- boxes
    **{f"torchvision.ops.{n}(boxes1, boxes2, reduction='mean')":
       (lambda n=n, k=k: ({"boxes1": box_refs._boxes(4, 5, F64), "boxes2": box_refs._boxes(4, 6, F64)},
                          lambda t: box_refs._per_box(k)(t, {})))
       for n, k in (("generalized_box_iou_loss", "giou"), ("distance_box_iou_loss", "diou"),
                    ("complete_box_iou_loss", "ciou"))},
    "monai.losses.BoxGIoULoss()":
        lambda: ({"boxes1": box_refs._boxes(4, 5, F64), "boxes2": box_refs._boxes(4, 6, F64)},
                 lambda t: _monai_losses().BoxGIoULoss()(t["boxes1"], t["boxes2"])),
    "monai.losses.BoxGIoULoss() on 3-D boxes":
        lambda: ({"boxes1": box_refs.boxes_3d(6, 9, F64), "boxes2": box_refs.boxes_3d(6, 10, F64)},
                 lambda t: _monai_losses().BoxGIoULoss()(t["boxes1"], t["boxes2"])),
    # ---- contrastive
    "monai.losses.ContrastiveLoss(temperature=0.5)":
        lambda: ({"input": randn(4, 3, dtype=F64, seed=25), "target": randn(4, 3, dtype=F64, seed=26)},
                 lambda t: _monai_losses().ContrastiveLoss(temperature=0.5)(t["input"], t["target"])),
    "monai.losses.BarlowTwinsLoss(lambd=5e-3)":
        lambda: ({"input": randn(5, 3, dtype=F64, seed=27), "target": randn(5, 3, dtype=F64, seed=28)},
                 lambda t: _monai_losses().BarlowTwinsLoss(lambd=5e-3)(t["input"], t["target"])),
    # ---- lovasz
    "kornia.losses.lovasz_hinge_loss(pred, target)":
        lambda: ({"input": randn(2, 1, 3, 3, dtype=F64, seed=29), "target": randint(2, 2, 3, 3, seed=30)},
                 lambda t: _kornia().losses.lovasz_hinge_loss(t["input"], t["target"])),
    "segmentation_models_pytorch.losses.LovaszLoss(mode='binary')":
        lambda: ({"input": randn(2, 1, 3, 3, dtype=F64, seed=31), "target": randint(2, 2, 1, 3, 3, seed=32)},
                 lambda t: lovasz_refs.hinge(t, {"per_image": False})),
    "segmentation_models_pytorch.losses.LovaszLoss(mode='binary', per_image=True, ignore_index=255)":
        lambda: ({"input": randn(2, 4, dtype=F64, seed=33), "target": torch.tensor([[1, 255, 0, 1], [0, 1, 255, 1]])},
                 lambda t: lovasz_refs.hinge(t, {"per_image": True, "ignore_index": 255})),
    "kornia.losses.lovasz_softmax_loss(pred, target)":
        lambda: (_seg(), lambda t: _kornia().losses.lovasz_softmax_loss(t["input"], t["target"])),
    "kornia.losses.lovasz_softmax_loss(pred, target, weight=w)":
        lambda: (_seg(), lambda t: _kornia().losses.lovasz_softmax_loss(t["input"], t["target"],
                                                                        weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64))),
    "segmentation_models_pytorch.losses.LovaszLoss(mode='multiclass')":
        lambda: (_seg(), lambda t: lovasz_refs.softmax(t, {})),
    "segmentation_models_pytorch.losses.LovaszLoss(mode='multiclass', per_image=True, ignore_index=-1)":
        lambda: ({"input": randn(2, 3, 4, dtype=F64, seed=34), "target": torch.tensor([[0, -1, 2, 2], [1, 1, -1, 0]])},
                 lambda t: lovasz_refs.softmax(t, {"per_image": True, "ignore_index": -1})),
    # ---- psnr, total variation, mutual information (kornia)
    "kornia.losses.psnr_loss(image, target, max_val=2.0)":
        lambda: ({"input": rand(2, 3, 4, dtype=F64, seed=80), "target": rand(2, 3, 4, dtype=F64, seed=81)},
                 lambda t: _kornia().losses.psnr_loss(t["input"], t["target"], max_val=2.0)),
    "kornia.losses.PSNRLoss(max_val=1.0)":
        lambda: ({"input": rand(5, dtype=F64, seed=82), "target": rand(5, dtype=F64, seed=83)},
                 lambda t: _kornia().losses.PSNRLoss(max_val=1.0)(t["input"], t["target"])),
    "kornia.losses.TotalVariation()(img)":
        lambda: ({"input": randn(2, 3, 4, 5, dtype=F64, seed=84)}, lambda t: _kornia().losses.TotalVariation()(t["input"])),
    "kornia.losses.total_variation(img, reduction='mean')":
        lambda: ({"input": randn(2, 4, 3, dtype=F64, seed=85)},
                 lambda t: _kornia().losses.total_variation(t["input"], reduction="mean")),
    "kornia.losses.mutual_information_loss(input, target)":
        lambda: ({"input": rand(3, 40, dtype=F64, seed=86), "target": rand(3, 40, dtype=F64, seed=87)},
                 lambda t: _kornia().losses.mutual_information_loss(t["input"], t["target"])),
    "kornia.losses.mutual_information_loss_2d(input, target, num_bins=16)":
        lambda: ({"input": rand(2, 2, 5, 4, dtype=F64, seed=88), "target": rand(2, 2, 5, 4, dtype=F64, seed=89)},
                 lambda t: _kornia().losses.mutual_information_loss_2d(t["input"], t["target"], num_bins=16)),
    "kornia.losses.MILossFromRef3D(target, kernel_function=MIKernel.truncated_gaussian, window_radius=2.0)(input)":
        lambda: ({"input": rand(2, 3, 4, 3, dtype=F64, seed=90), "target": rand(2, 3, 4, 3, dtype=F64, seed=91)},
                 lambda t: _kornia().losses.MILossFromRef3D(
                     t["target"], kernel_function=_kornia().losses.MIKernel.truncated_gaussian, window_radius=2.0)(
                     t["input"])),
    "kornia.losses.normalized_mutual_information_loss_2d(input, target)":
        lambda: ({"input": rand(2, 6, 5, dtype=F64, seed=92), "target": rand(2, 6, 5, dtype=F64, seed=93)},
                 lambda t: _kornia().losses.normalized_mutual_information_loss_2d(t["input"], t["target"])),
    "kornia.losses.NMILossFromRef(target, num_bins=32)(input)":
        lambda: ({"input": rand(2, 30, dtype=F64, seed=94), "target": rand(2, 30, dtype=F64, seed=95)},
                 lambda t: _kornia().losses.NMILossFromRef(t["target"], num_bins=32)(t["input"])),
    # ---- boundary (MONAI computes its distance maps in float32)
    "monai.losses.BoundaryLoss(softmax=True, to_onehot_y=True)":
        lambda: ({"input": randn(2, 3, 5, 4, dtype=F64, seed=110), "target": randint(3, 2, 5, 4, seed=111)},
                 lambda t: _monai_losses().BoundaryLoss(softmax=True, to_onehot_y=True)(t["input"], t["target"].unsqueeze(1))),
    "monai.losses.BoundaryLoss(sigmoid=True, include_background=False, batch=True, reduction='none')":
        lambda: ({"input": randn(2, 3, 4, 4, dtype=F64, seed=112), "target": _mask(2, 3, 4, 4, seed=113)},
                 lambda t: _monai_losses().BoundaryLoss(sigmoid=True, include_background=False, batch=True,
                                                       reduction="none")(t["input"], t["target"])),
    "monai.losses.BoundaryLoss()":
        lambda: ({"input": rand(1, 2, 3, 4, 3, dtype=F64, seed=114), "target": _mask(1, 2, 3, 4, 3, seed=115)},
                 lambda t: _monai_losses().BoundaryLoss()(t["input"], t["target"])),
    "kornia.losses.kl_div_loss_2d(pred, target)":
        lambda: ({"input": torch.softmax(randn(2, 3, 16, dtype=F64, seed=96), -1).reshape(2, 3, 4, 4),
                  "target": torch.softmax(randn(2, 3, 16, dtype=F64, seed=97), -1).reshape(2, 3, 4, 4) * (rand(2, 3, 4, 4, dtype=F64, seed=98) > 0.2)},
                 lambda t: _kornia().losses.kl_div_loss_2d(t["input"], t["target"])),
    "kornia.losses.js_div_loss_2d(pred, target, reduction='sum')":
        lambda: ({"input": torch.softmax(randn(2, 2, 12, dtype=F64, seed=99), -1).reshape(2, 2, 3, 4),
                  "target": torch.softmax(randn(2, 2, 12, dtype=F64, seed=116), -1).reshape(2, 2, 3, 4)},
                 lambda t: _kornia().losses.js_div_loss_2d(t["input"], t["target"], reduction="sum")),
    "kornia.losses.InverseDepthSmoothnessLoss()":
        lambda: ({"input": rand(2, 1, 4, 5, dtype=F64, seed=117), "target": rand(2, 3, 4, 5, dtype=F64, seed=118)},
                 lambda t: _kornia().losses.InverseDepthSmoothnessLoss()(t["input"], t["target"])),
    # ---- image
    "kornia.losses.ssim_loss(img1, img2, window_size=5)":
        lambda: ({"input": rand(2, 2, 7, 6, dtype=F64, seed=35), "target": rand(2, 2, 7, 6, dtype=F64, seed=36)},
                 lambda t: _kornia().losses.ssim_loss(t["input"], t["target"], window_size=5)),
    "kornia.losses.ssim3d_loss(img1, img2, window_size=3)":
        lambda: ({"input": rand(1, 2, 4, 5, 3, dtype=F64, seed=51), "target": rand(1, 2, 4, 5, 3, dtype=F64, seed=52)},
                 lambda t: _kornia().losses.ssim3d_loss(t["input"], t["target"], window_size=3)),
    "monai.losses.SSIMLoss(spatial_dims=3, win_size=3)":
        lambda: ({"input": rand(2, 1, 4, 5, 4, dtype=F64, seed=53), "target": rand(2, 1, 4, 5, 4, dtype=F64, seed=54)},
                 lambda t: _monai_losses().SSIMLoss(spatial_dims=3, win_size=3)(t["input"], t["target"])),
    "kornia.losses.HausdorffERLoss(alpha=2.0, k=3)":
        lambda: ({"input": image_refs._near_binary(55, F64, 2, 3, 6, 5), "target": randint(3, 2, 1, 6, 5, seed=57)},
                 lambda t: _kornia().losses.HausdorffERLoss(alpha=2.0, k=3)(t["input"], t["target"])),
    "kornia.losses.HausdorffERLoss3D(alpha=2.0, k=2)":
        lambda: ({"input": image_refs._near_binary(58, F64, 2, 2, 4, 5, 4), "target": randint(2, 2, 1, 4, 5, 4, seed=60)},
                 lambda t: _kornia().losses.HausdorffERLoss3D(alpha=2.0, k=2)(t["input"], t["target"])),
    "kornia.losses.MS_SSIMLoss(sigmas=(0.5, 1.0, 2.0))":
        lambda: ({"input": rand(2, 2, 7, 6, dtype=F64, seed=61), "target": rand(2, 2, 7, 6, dtype=F64, seed=62)},
                 lambda t: _kornia().losses.MS_SSIMLoss(sigmas=(0.5, 1.0, 2.0))(t["input"], t["target"])),
    "monai.losses.SSIMLoss(spatial_dims=2, win_size=5)":
        lambda: ({"input": rand(2, 1, 8, 8, dtype=F64, seed=37), "target": rand(2, 1, 8, 8, dtype=F64, seed=38)},
                 lambda t: _monai_losses().SSIMLoss(spatial_dims=2, win_size=5)(t["input"], t["target"])),
    "monai.losses.SSIMLoss with monai.metrics.MultiScaleSSIMMetric(spatial_dims=2, kernel_size=3, "
    "weights=(0.4, 0.6)): 1 - metric":
        lambda: ({"input": rand(2, 1, 8, 8, dtype=F64, seed=39), "target": rand(2, 1, 8, 8, dtype=F64, seed=39) * 0.8 + 0.1},
                 lambda t: _ms_ssim_monai(t)),
    "monai.losses.HausdorffDTLoss(include_background=True)":
        lambda: ({"input": rand(2, 2, 5, 4, dtype=F64, seed=40), "target": _mask(2, 2, 5, 4, seed=41)},
                 lambda t: _monai_losses().HausdorffDTLoss(include_background=True)(t["input"], t["target"])),
    "monai.losses.HausdorffDTLoss(softmax=True, to_onehot_y=True, batch=True)":
        lambda: ({"input": randn(2, 3, 5, 4, dtype=F64, seed=42), "target": randint(3, 2, 5, 4, seed=43)},
                 lambda t: _monai_losses().HausdorffDTLoss(softmax=True, to_onehot_y=True, batch=True)(
                     t["input"], t["target"].unsqueeze(1))),
}


def _smp_soft_bce(x, y, smooth_factor, pos_weight):
    """smp / pytorch-toolbelt SoftBCEWithLogitsLoss: smoothed targets, BCE with logits, mean."""
    soft = (1 - y) * smooth_factor + y * (1 - smooth_factor)
    pw = torch.tensor(pos_weight, dtype=x.dtype).view(-1, 1, 1)
    return F.binary_cross_entropy_with_logits(x, soft, pos_weight=pw, reduction="mean")


def _tv_focal(x, y, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss as published, reduction 'mean'."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return (ce * ((1 - p_t) ** gamma) * (alpha * y + (1 - alpha) * (1 - y))).mean()


def _ms_ssim_monai(t):
    from monai.metrics import MultiScaleSSIMMetric

    metric = MultiScaleSSIMMetric(spatial_dims=2, kernel_size=3, weights=(0.4, 0.6))
    return (1 - metric._compute_metric(t["input"], t["target"])).mean()


# ---- pytorch-toolbelt 0.8: bi-tempered logistic loss and balanced BCE, from its published formulas


def _log_t(u, t):
    return torch.log(u) if t == 1 else (u ** (1 - t) - 1) / (1 - t)


def _exp_t(u, t):
    return torch.exp(u) if t == 1 else torch.clamp(1 + (1 - t) * u, min=0) ** (1 / (1 - t))


class _TemperedNormalization(torch.autograd.Function):
    """λ over the last dim: toolbelt's fixed point (t > 1) or bisection (t < 1); backward: the escorts."""

    @staticmethod
    def forward(ctx, a, t, iters):
        mu = a.max(-1, keepdim=True).values
        a0 = a - mu
        if t > 1:
            z = a0
            for _ in range(iters):
                z = a0 * _exp_t(z, t).sum(-1, keepdim=True) ** (1 - t)
            lam = -_log_t(1 / _exp_t(z, t).sum(-1, keepdim=True), t) + mu
        else:
            dim = (a0 > -1 / (1 - t)).to(a.dtype).sum(-1, keepdim=True)
            lo, hi = torch.zeros_like(mu), -_log_t(1 / dim, t)
            for _ in range(iters):
                mid = (lo + hi) / 2
                up = (_exp_t(a0 - mid, t).sum(-1, keepdim=True) < 1).to(a.dtype)
                lo, hi = lo * up + (1 - up) * mid, hi * (1 - up) + up * mid
            lam = (lo + hi) / 2 + mu
        ctx.save_for_backward(a, lam)
        ctx.t = t
        return lam

    @staticmethod
    def backward(ctx, grad):
        a, lam = ctx.saved_tensors
        e = _exp_t(a - lam, ctx.t) ** ctx.t
        return e / e.sum(-1, keepdim=True) * grad, None, None


def toolbelt_bi_tempered(x, labels, *, t1, t2, smoothing=0.0, iters=5):
    """pytorch-toolbelt bi_tempered_logistic_loss, reduction 'none': classes on the last dim."""
    c = x.shape[-1]
    y = labels if labels.dim() == x.dim() else F.one_hot(labels, c).to(x.dtype)
    if smoothing > 0:
        y = (1 - smoothing * c / (c - 1)) * y + smoothing / (c - 1)
    p = torch.softmax(x, -1) if t2 == 1 else _exp_t(x - _TemperedNormalization.apply(x, t2, iters), t2)
    return (y * _log_t(y + 1e-10, t1) - y * _log_t(p, t1) - y ** (2 - t1) / (2 - t1) + p ** (2 - t1) / (2 - t1)).sum(-1)


def toolbelt_balanced_bce(x, y, *, gamma=1.0, ignore_index=None, reduction="mean"):
    pos, neg = (y == 1).sum().to(x.dtype), (y == 0).sum().to(x.dtype)
    w = (neg / (pos + neg + 1e-7)) ** gamma
    loss = -((w ** gamma) * y * torch.log(torch.sigmoid(x)) + ((1 - w) ** gamma) * (1 - y) * torch.log(1 - torch.sigmoid(x)))
    if ignore_index is not None:
        loss = loss * (y != ignore_index)
    return loss.mean() if reduction == "mean" else loss.sum()


CHECKS.update({
    "pytorch_toolbelt.losses.BiTemperedLogisticLoss(t1=0.8, t2=1.4, smoothing=0.1)":
        lambda: ({"input": randn(5, 4, dtype=F64, seed=100), "target": randint(4, 5, seed=101)},
                 lambda t: toolbelt_bi_tempered(t["input"], t["target"], t1=0.8, t2=1.4, smoothing=0.1).mean()),
    "pytorch_toolbelt.losses.bi_tempered_logistic_loss(activations, labels, t1=0.5, t2=0.7, num_iters=8, reduction='sum')":
        lambda: ({"input": 2 * randn(4, 3, dtype=F64, seed=102), "target": _onehot(randint(3, 4, seed=103), 3)},
                 lambda t: toolbelt_bi_tempered(t["input"], t["target"], t1=0.5, t2=0.7, iters=8).sum()),
    "pytorch_toolbelt.losses.BinaryBiTemperedLogisticLoss(t1=0.9, t2=1.2)":
        lambda: ({"input": randn(3, 1, 4, dtype=F64, seed=104), "target": _mask(3, 1, 4, seed=105)},
                 lambda t: toolbelt_bi_tempered(torch.cat([-t["input"], t["input"]], 1).moveaxis(1, -1),
                                                torch.cat([1 - t["target"], t["target"]], 1).moveaxis(1, -1),
                                                t1=0.9, t2=1.2).mean()),
    "pytorch_toolbelt.losses.BalancedBCEWithLogitsLoss()":
        lambda: ({"input": randn(2, 5, dtype=F64, seed=106), "target": _mask(2, 5, seed=107)},
                 lambda t: toolbelt_balanced_bce(t["input"], t["target"])),
    "pytorch_toolbelt.losses.BalancedBCEWithLogitsLoss(gamma=2.0, ignore_index=-1, reduction='sum')":
        lambda: ({"input": randn(2, 4, dtype=F64, seed=108), "target": torch.tensor([[1.0, 0, -1, 0], [0, -1, 1, 0]], dtype=F64)},
                 lambda t: toolbelt_balanced_bce(t["input"], t["target"], gamma=2.0, ignore_index=-1, reduction="sum")),
})
