"""The loss registry and the built-in losses (every loss ``torch.nn`` ships).

>>> from lossd.server.losses import REGISTRY
>>> REGISTRY.get("CrossEntropyLoss").name
'cross_entropy'
"""

from __future__ import annotations

from . import (  # noqa: F401  (register the built-ins)
    _adversarial,
    _auc,
    _boundary,
    _boxes,
    _calibration,
    _classification,
    _cldice,
    _custom,
    _deformation,
    _embedding,
    _focal,
    _image,
    _lovasz,
    _overlap,
    _projection,
    _registration,
    _regression,
    _robust,
    _robust_classification,
    _sequence,
    _similarity,
    _spectral,
    _unified_focal,
    _wasserstein_dice,
)
from ._dtypes import TORCH_DTYPES, WIRE_NAMES
from ._registry import (
    MAX_LOSS_WORK,
    REDUCTION,
    REGISTRY,
    Domain,
    DomainWarning,
    Input,
    InputRole,
    LossError,
    LossSpec,
    Param,
    Registry,
    Work,
    broadcast_elements,
    reduce,
    register_loss,
    require,
    require_class_indices,
    require_finite,
    require_same_shape,
    require_unit_interval,
    strictness,
)

__all__ = [
    "MAX_LOSS_WORK",
    "REDUCTION",
    "Domain",
    "DomainWarning",
    "REGISTRY",
    "TORCH_DTYPES",
    "WIRE_NAMES",
    "Input",
    "InputRole",
    "LossError",
    "LossSpec",
    "Param",
    "Registry",
    "Work",
    "broadcast_elements",
    "reduce",
    "register_loss",
    "require",
    "require_class_indices",
    "require_finite",
    "require_same_shape",
    "require_unit_interval",
    "strictness",
]
