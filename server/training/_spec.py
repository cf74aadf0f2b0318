"""Validate a ``TrainJobRequest`` into a :class:`JobPlan`: every rule of a job spec, in one place.

Each refusal is a :class:`~lossd.server.losses.FieldError` naming the request
field (``optimizer.param_groups[1].patterns``, ``data.builtin.params.noise``)
and the rule; limits answer ``RESOURCE_EXHAUSTED`` and name the server flag.
The plan holds the generated data, so the server (to validate) and the worker
(to train) build exactly the same job from the same request::

    >>> from google.protobuf import json_format
    >>> from lossd.v1 import training_pb2
    >>> from lossd.server.losses import REGISTRY
    >>> request = json_format.ParseDict({
    ...     "model": {"mlp": {"hidden": [4], "output_activation": "sigmoid"}},
    ...     "data": {"builtin": {"name": "rings", "params": {"n_positive": 20, "n_negative": 60}},
    ...              "validation_fraction": 0.25},
    ...     "loss": {"name": "binary_focal_loss"}, "optimizer": {"name": "adam", "lr": 0.01},
    ...     "epochs": 2, "batch_size": 16, "metrics": ["accuracy"]}, training_pb2.TrainJobRequest())
    >>> plan = plan_job(request, REGISTRY)
    >>> plan.out_features, len(plan.train_index), len(plan.val_index), plan.steps_per_epoch, plan.total_steps
    (1, 60, 20, 4, 8)
    >>> plan_job(training_pb2.TrainJobRequest(epochs=1), REGISTRY)
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: model: choose a model: {"linear": {}} or {"mlp": {"hidden": [...]}}
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..._model import ACTIVATIONS, OUTPUT_ACTIVATIONS, ModelPlan, build_model, count_parameters
from ..._settings import first_line, flag_name
from ..._wire import MAX_LOSS_WORK, FieldError, check_tensors, reply_encoding
from ...v1 import training_pb2
from .._limits import TrainingLimits
from ..evaluation import (
    DEPRECATED_PARAMS,
    LossCrashed,
    Regularization,
    bind_params,
    call_loss,
    check_param_range,
    check_patterns,
    check_work,
    covered_parameters,
    covers_nothing,
    param_copies,
)
from ..losses import LossSpec, Registry
from ..rpc import check_finite, decode_tensor, struct_to_dict
from ._data import BUILTINS, NO_NON_FINITE, Dataset, bind_builtin_params, make_inline, split
from ._metrics import CHUNK
from ._optim import OPTIMIZERS, GroupPlan, OptimizerPlan, SchedulePlan, assign_groups

__all__ = ["METRICS", "JobPlan", "LossPlan", "check_loss_accepts_model", "plan_job"]

#: Metrics a job can ask for.
METRICS = ("accuracy", "mae", "rmse")
DEFAULT_BATCH_SIZE = 32
DEFAULT_STEP_EVENTS_PER_SECOND = 10.0


def _limit(field: str, what: str, value: int, limit: int, setting: str) -> FieldError:
    """RESOURCE_EXHAUSTED naming the ``lossd serve`` flag of limit ``setting`` (its conventional name,
    which the server's settings table keeps: tests/unit/test_config.py)."""
    return FieldError(field, f"{what} is {value}; the server's limit is {limit} ({flag_name(setting)})",
                      "RESOURCE_EXHAUSTED")


@dataclass(frozen=True)
class LossPlan:
    """The data loss: the registry entry, its bound parameters, constant extra inputs, and input names."""

    spec: LossSpec
    kwargs: Mapping[str, Any]
    prediction: str
    target: str
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of a batch (a 0-d tensor)."""
        tensors: dict[str, torch.Tensor | None] = {i.name: None for i in self.spec.inputs}
        tensors.update(self.extras)
        tensors[self.prediction] = output
        tensors[self.target] = target
        # each step's own copies of list and dict params: a loss that changed them would change every later
        # step, and a resumed job (whose plan starts from the declared values) would no longer match
        kwargs = param_copies(self.kwargs) if self.spec.mutable_values else dict(self.kwargs)
        # as EvaluateLoss calls it: torch's own errors (a batch-coupled loss's N x N matrix that cannot be
        # allocated) are a FieldError, and the job fails saying so, not "internal error in the training
        # worker"; SystemExit, StopIteration...: a LossCrashed (a worker ignores SIGINT, so a
        # KeyboardInterrupt here is the loss's own)
        return call_loss(self.spec, tensors, kwargs)


@dataclass(frozen=True)
class JobPlan:
    """A validated job: settings, data (tensors) and derived sizes."""

    model: ModelPlan
    loss: LossPlan
    regularization: Regularization
    optimizer: OptimizerPlan
    schedule: SchedulePlan | None
    data: Dataset
    target: torch.Tensor  # what the loss gets as target, all samples
    in_features: int
    out_features: int
    train_index: torch.Tensor
    val_index: torch.Tensor
    epochs: int
    batch_size: int
    seed: int
    metrics: tuple[str, ...]
    step_events_per_second: float
    encoding: str  # "values" or "raw": how parameters are encoded in replies
    name: str = ""
    covered: tuple[str, ...] = ()  # parameter names the L1/L2 terms cover
    warnings: tuple[str, ...] = ()
    world_size: int = 1  # data-parallel ranks; each trains on batch_size // world_size samples of every batch
    nodes: int = 1  # machines the ranks run on (world_size // nodes each); the server's runs rank 0

    @property
    def reduction(self) -> str:
        """The data loss's reduction: ``mean`` or ``sum`` (``""`` for a loss without the parameter)."""
        param = self.loss.spec.param("reduction")
        return str(self.loss.kwargs.get("reduction", param.default if param else "") or "")

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last batch may be smaller)."""
        return -(-len(self.train_index) // self.batch_size)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole job."""
        return self.epochs * self.steps_per_epoch

    @property
    def classification_threshold(self) -> float:
        """Decision threshold of a one-output classifier: 0.5 after a sigmoid, else 0."""
        return 0.5 if self.model.output_activation == "sigmoid" else 0.0


def _finite(value: float, field: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` if finite and in range, else a FieldError naming ``field`` and the range."""
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        if lo is not None and hi is not None:
            rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            rng = f"{'>' if lo_open else '>='} {lo:g}"
        elif hi is not None:
            rng = f"{'<' if hi_open else '<='} {hi:g}"
        else:
            rng = "finite"
        raise FieldError(field, f"is {value!r}; must be {rng}")
    return value


def _model(request: training_pb2.TrainJobRequest, limits: TrainingLimits) -> ModelPlan:
    kind = request.model.WhichOneof("kind")
    if kind is None:
        raise FieldError("model", 'choose a model: {"linear": {}} or {"mlp": {"hidden": [...]}}')
    outputs = ", ".join(repr(k) for k in OUTPUT_ACTIVATIONS if k)
    if kind == "linear":
        out_act = request.model.linear.output_activation
        if out_act not in OUTPUT_ACTIVATIONS:
            raise FieldError("model.linear.output_activation", f"is {out_act!r}; must be one of {outputs}")
        return ModelPlan("linear", output_activation=out_act)
    mlp = request.model.mlp
    if not mlp.hidden:
        raise FieldError("model.mlp.hidden", "give at least one hidden layer size, e.g. [16]")
    if len(mlp.hidden) > limits.max_layers:
        raise _limit("model.mlp.hidden", "the number of hidden layers", len(mlp.hidden), limits.max_layers,
                     "max_layers")
    for i, h in enumerate(mlp.hidden):
        if h < 1:
            raise FieldError(f"model.mlp.hidden[{i}]", f"is {h}; layer sizes must be >= 1")
        if h > limits.max_layer_width:
            raise _limit(f"model.mlp.hidden[{i}]", "the layer's width", h, limits.max_layer_width, "max_layer_width")
    activation = mlp.activation or "relu"
    if activation not in ACTIVATIONS:
        raise FieldError(
            "model.mlp.activation", f"is {activation!r}; must be one of {', '.join(map(repr, ACTIVATIONS))}"
        )
    if mlp.output_activation not in OUTPUT_ACTIVATIONS:
        raise FieldError("model.mlp.output_activation", f"is {mlp.output_activation!r}; must be one of {outputs}")
    _finite(mlp.dropout, "model.mlp.dropout", 0.0, 1.0, hi_open=True)
    return ModelPlan("mlp", tuple(mlp.hidden), activation, mlp.output_activation, mlp.dropout)


@dataclass(frozen=True)
class _DataSize:
    """A data set's sizes, known before any of it is generated: samples, features, and classes
    (classification) or regression targets."""

    samples: int
    features: int
    classes: int = 0
    targets: int = 0


def _data(
    request: training_pb2.TrainJobRequest, limits: TrainingLimits
) -> tuple[_DataSize, Callable[[], Dataset], str]:
    """The data set's sizes, a function that makes it, and how its tensors were sent (``values``, ``raw``
    or ``""`` for a built-in). A built-in set is sized from its parameters, not generated; inline data is
    decoded (its tensors passed the request limits), labels counted against ``--max-classes``."""
    data = request.data
    source = data.WhichOneof("source")
    if source is None:
        raise FieldError("data", f'choose a source: {{"builtin": {{"name": ...}}}} ({", ".join(sorted(BUILTINS))}) '
                                'or {"inline": {"x": ..., "y": ...}}')
    if source == "builtin":
        builtin, params = bind_builtin_params(
            data.builtin.name, struct_to_dict(data.builtin.params, "data.builtin.params")
        )
        n = builtin.samples(params)
        if n > limits.max_samples:
            raise _limit("data.builtin.params", "the number of samples", n, limits.max_samples, "max_samples")
        if n < 2:
            raise FieldError("data.builtin.params", f"asks for {n} samples; a job needs at least 2")
        d = builtin.features(params)
        elements = n * d
        if elements > limits.max_tensor_elements:
            raise _limit("data.builtin.params", "the number of feature values", elements,
                         limits.max_tensor_elements, "max_tensor_elements")
        k = builtin.targets(params)
        if builtin.classification and k > limits.max_classes:
            raise _limit("data.builtin.params", "the number of classes", k, limits.max_classes, "max_classes")
        if not builtin.classification and n * k > limits.max_tensor_elements:
            raise _limit("data.builtin.params", f"the number of target values ({n} samples x {k} targets)", n * k,
                         limits.max_tensor_elements, "max_tensor_elements")
        seed = params["seed"] if params["seed"] is not None else request.seed
        size = _DataSize(n, d, k, 0) if builtin.classification else _DataSize(n, d, 0, k)

        def make() -> Dataset:  # refused as inline data is when it is not finite, naming what made it so
            made = builtin.make(params, torch.Generator().manual_seed(seed))
            for t in (made.x, made.y):
                if t is not None:
                    check_finite(t, "data.builtin.params", "these parameters make values beyond float32's range")
            return made

        return size, make, ""
    inline = data.inline
    encodings = set()
    tensors = {}
    for key in ("x", "y"):
        if not inline.HasField(key):
            raise FieldError(f"data.inline.{key}", "is required")
        tensors[key], enc = decode_tensor(getattr(inline, key), f"data.inline.{key}", limits.max_tensor_elements)
        encodings.add(enc)
    n = int(tensors["x"].shape[0]) if tensors["x"].dim() else 0
    if n > limits.max_samples:
        raise _limit("data.inline.x", "the number of samples", n, limits.max_samples, "max_samples")
    dataset = make_inline(tensors["x"], tensors["y"], inline.num_classes, max_classes=limits.max_classes)
    if dataset.labels is not None:
        size = _DataSize(len(dataset), int(dataset.x.shape[1]), dataset.num_classes, 0)
    else:
        assert dataset.y is not None
        size = _DataSize(len(dataset), int(dataset.x.shape[1]), 0, int(dataset.y.shape[1]))
    return size, lambda: dataset, "raw" if "raw" in encodings and "values" not in encodings else "values"


def _loss(
    request: training_pb2.TrainJobRequest, registry: Registry, limits: TrainingLimits
) -> tuple[LossSpec, dict[str, Any], str, str, dict[str, torch.Tensor]]:
    name = request.loss.name
    if not name:
        raise FieldError("loss.name", "name a registered loss, e.g. \"cross_entropy\" (ListLosses lists them)")
    try:
        spec = registry.get(name)
    except FieldError as e:
        raise FieldError("loss.name", e.message, e.code) from e
    prediction = spec.inputs[0]
    target = next((i for i in spec.inputs if i.role == "target"), None)
    extra_required = [i.name for i in spec.inputs if i.required and i is not prediction and i is not target]
    if prediction.role != "prediction" or target is None or extra_required:
        needs = ", ".join(f"{i.name} ({i.role})" for i in spec.inputs if i.required)
        raise FieldError("loss.name", f"{spec.name} takes {needs}; a training loss must take the model output "
                        "(prediction) and a target, plus optional constant inputs")
    try:
        kwargs = bind_params(spec, struct_to_dict(request.loss.params, "params", registry, spec.name),
                             refused=DEPRECATED_PARAMS)
        check_param_range(spec, kwargs, torch.float32, "a job trains in float32: use a smaller value")
    except FieldError as e:
        raise FieldError(f"loss.{e.field}", e.message, e.code) from e
    if kwargs.get("reduction") == "none":
        raise FieldError("loss.params.reduction", "is 'none'; training needs a scalar loss ('mean' or 'sum')")
    extras: dict[str, torch.Tensor] = {}
    for sent in sorted(request.loss.inputs):
        field = f"loss.inputs.{sent}"
        inp = spec.input(sent)
        if inp is None or inp is prediction or inp is target:
            optional = [i.name for i in spec.inputs if not i.required]
            raise FieldError(field, f"is not a constant input of {spec.name}; constant inputs: "
                            f"{', '.join(optional) or 'none'} (the model output and the target come from the job)")
        t, _ = decode_tensor(request.loss.inputs[sent], field, limits.max_tensor_elements)
        if inp.kind == "float":
            if not t.is_floating_point() and t.dtype != torch.bool:
                raise FieldError(field, f"must be floating-point ({inp.role})")
            t = t.to(torch.float32)
        check_finite(t, field, NO_NON_FINITE)
        extras[inp.name] = t
    return spec, kwargs, prediction.name, target.name, extras


def _check_tensor_limits(request: training_pb2.TrainJobRequest, limits: TrainingLimits) -> None:
    """The request's tensors against the per-request limits, from their shapes: before any is decoded."""
    tensors = [(f"loss.inputs.{k}", request.loss.inputs[k], None) for k in sorted(request.loss.inputs)]
    if request.data.WhichOneof("source") == "inline":
        tensors += [(f"data.inline.{k}", getattr(request.data.inline, k), None) for k in ("x", "y")
                    if request.data.inline.HasField(k)]
    check_tensors(tensors, limits.tensors)


def _outputs(spec: LossSpec, target_input: str, size: _DataSize) -> tuple[int, str]:
    """The model's output size and the loss's target form: ``index`` (class labels), ``binary``
    (0/1 floats, one column), ``one_hot`` (``N x classes`` floats) or ``values`` (regression).

    Class labels go to the loss as indices when its target may be an integer
    (``cross_entropy``: one output per class); a float-target loss gets 0/1
    in one output for two classes (``binary_focal_loss``), one-hot otherwise.
    """
    inp = spec.input(target_input)
    assert inp is not None
    if size.classes:
        if inp.kind in ("int", "float|int"):
            return size.classes, "index"
        if size.classes == 2:
            return 1, "binary"
        return size.classes, "one_hot"
    if inp.kind == "int":
        raise FieldError("loss.name", f"{spec.name} needs integer class labels as its target; this job's data "
                        "has a floating-point (regression) target")
    return size.targets, "values"


def _target(dataset: Dataset, form: str) -> torch.Tensor:
    """The loss's target for every sample, in ``form`` (see :func:`_outputs`; sizes already checked)."""
    if form == "values":
        assert dataset.y is not None
        return dataset.y
    assert dataset.labels is not None
    if form == "binary":
        return dataset.labels.to(torch.float32).unsqueeze(1)
    if form == "one_hot":
        return torch.nn.functional.one_hot(dataset.labels, dataset.num_classes).to(torch.float32)
    return dataset.labels


#: Bytes allowed in a job's result message beyond its parameters' numbers and the spec: tensor names and
#: headers, metrics, messages (a small model's terminal event is about 1 KB).
RESULT_OVERHEAD_BYTES = 64 * 1024


def epoch_summary_bytes(metrics: int) -> int:
    """The most bytes one epoch adds to a job's result (an ``EpochSummary`` in the terminal event's history) with
    ``metrics`` metrics: its framing, epoch, loss and lr, three loss parts, and a map entry for each metric and the
    loss of each split (``train_``, ``val_``), named in at most 14 bytes (``train_accuracy``).

    >>> epoch_summary_bytes(2)
    241
    """
    return 4 + 6 + 9 + 9 + 3 * 17 + 2 * (metrics + 1) * 27


def _check_sizes(request: training_pb2.TrainJobRequest, model: ModelPlan, size: _DataSize, out_features: int,
                 limits: TrainingLimits) -> None:
    """Everything the job would allocate, from sizes alone, against the limits: before any of it is built.

    The model's output (and a one-hot target) over every sample, the model's parameters, and the
    activations of one forward pass (a training batch, or an evaluation chunk of ``CHUNK`` samples).
    """
    outputs = size.samples * out_features
    if outputs > limits.max_tensor_elements:
        raise _limit("data", f"the model's output over the data set ({size.samples} samples x {out_features} "
                     "outputs)", outputs, limits.max_tensor_elements, "max_tensor_elements")
    n_params = count_parameters(model, size.features, out_features)
    if n_params > limits.max_parameters:
        raise _limit("model", f"the number of parameters of the model ({size.features} inputs, {out_features} "
                     "outputs)", n_params, limits.max_parameters, "max_parameters")
    # The trained parameters come back in one message (the terminal event, with every epoch's summary;
    # GetJob's, with the spec), 8 bytes each as values, the encoding any reader may ask for: a result over
    # the server's message limit could never be read (RESOURCE_EXHAUSTED "Sent message larger than max" on
    # every try). The field named: epochs where the history is larger than the parameters, else model.
    values, history, spec = 8 * n_params, request.epochs * epoch_summary_bytes(len(request.metrics)), request.ByteSize()
    result = RESULT_OVERHEAD_BYTES + values + history + spec
    if result > limits.max_message_bytes:
        raise _limit("epochs" if history > values else "model",
                     f"the job's result (its {n_params} parameters as 8-byte values, {values}; the history of "
                     f"{request.epochs} epochs, at most {history}; the spec, {spec}; and {RESULT_OVERHEAD_BYTES} for "
                     "the rest), in bytes,", result, limits.max_message_bytes, "max_message_bytes")
    rows = max(min(request.batch_size or DEFAULT_BATCH_SIZE, size.samples), min(CHUNK, size.samples))
    activations = rows * (sum(model.hidden) + out_features)
    if activations > limits.max_tensor_elements:
        raise _limit("model", f"the activations of one forward pass ({rows} samples x "
                     f"{sum(model.hidden) + out_features} units)", activations, limits.max_tensor_elements,
                     "max_tensor_elements")


def _optimizer(request: training_pb2.TrainJobRequest, names: list[str]) -> OptimizerPlan:
    o = request.optimizer
    name = (o.name or "").lower()
    if name not in OPTIMIZERS:
        raise FieldError("optimizer.name", f"is {o.name!r}; must be one of {', '.join(OPTIMIZERS)}")
    _, accepted = OPTIMIZERS[name]
    present = {f.name for f, _ in o.ListFields()} - {"name", "param_groups"}
    for key in sorted(present - accepted - {"lr", "weight_decay"}):
        takers = [n for n, (_, acc) in OPTIMIZERS.items() if key in acc]
        raise FieldError(f"optimizer.{key}", f"{name} has no setting {key!r} (it is for {', '.join(takers)})")
    settings: dict[str, Any] = {}
    if o.HasField("lr"):  # >= 0, as torch: 0 leaves the parameters where they are
        settings["lr"] = _finite(o.lr, "optimizer.lr", 0.0)
    if o.HasField("weight_decay"):
        settings["weight_decay"] = _finite(o.weight_decay, "optimizer.weight_decay", 0.0)
    if o.HasField("momentum"):
        settings["momentum"] = _finite(o.momentum, "optimizer.momentum", 0.0)
    if o.HasField("dampening"):  # any finite number, as torch (its float32 limit: _check_float32_settings)
        settings["dampening"] = _finite(o.dampening, "optimizer.dampening")
    if o.nesterov:
        settings["nesterov"] = True
        # torch checks the optimizer's own momentum and dampening, not a group's: a group with momentum 0
        # takes plain steps (torch skips Nesterov's look-ahead where there is no momentum)
        if settings.get("momentum", 0.0) <= 0 or settings.get("dampening", 0.0) != 0:
            raise FieldError("optimizer.nesterov", "needs momentum > 0 and dampening 0")
    if o.betas:
        if len(o.betas) != 2:
            raise FieldError("optimizer.betas", f"has {len(o.betas)} numbers; give two, e.g. [0.9, 0.999]")
        settings["betas"] = tuple(
            _finite(b, f"optimizer.betas[{i}]", 0.0, 1.0, hi_open=True) for i, b in enumerate(o.betas)
        )
    if o.HasField("eps"):  # >= 0, as torch (0 may divide by zero: the job then ends FAILED at a NaN)
        settings["eps"] = _finite(o.eps, "optimizer.eps", 0.0)
    if o.HasField("alpha"):  # >= 0, as torch (above 1 its square average can turn negative: NaN, FAILED)
        settings["alpha"] = _finite(o.alpha, "optimizer.alpha", 0.0)
    if o.centered:
        settings["centered"] = True
    if o.amsgrad:
        settings["amsgrad"] = True
    if o.HasField("lr_decay"):
        settings["lr_decay"] = _finite(o.lr_decay, "optimizer.lr_decay", 0.0)

    groups = []
    for i, g in enumerate(o.param_groups):
        field = f"optimizer.param_groups[{i}]"
        if not g.patterns:
            raise FieldError(f"{field}.patterns", 'give at least one name pattern, e.g. ["*.weight"]')
        for k, p in enumerate(g.patterns):
            if not p:
                raise FieldError(f"{field}.patterns[{k}]", "is empty")
        overrides: dict[str, float] = {}
        if g.HasField("lr"):  # 0 freezes the group's parameters, as in torch
            overrides["lr"] = _finite(g.lr, f"{field}.lr", 0.0)
        if g.HasField("weight_decay"):
            overrides["weight_decay"] = _finite(g.weight_decay, f"{field}.weight_decay", 0.0)
        if g.HasField("momentum"):
            if "momentum" not in accepted:
                raise FieldError(f"{field}.momentum", f"{name} has no momentum")
            overrides["momentum"] = _finite(g.momentum, f"{field}.momentum", 0.0)
        groups.append(GroupPlan(g.name or f"param_groups[{i}]", tuple(g.patterns), overrides))
    _check_group_names(o.param_groups)
    _, per_group, clashes = assign_groups(names, groups)
    for i, matched in enumerate(per_group):
        if not matched and not any(c[2] == i for c in clashes):
            raise FieldError(
                f"optimizer.param_groups[{i}].patterns",
                f"{list(groups[i].patterns)} matches no parameter; the model's parameters: {', '.join(names)}",
            )
    if clashes:
        pname, i, j = clashes[0]
        raise FieldError(f"optimizer.param_groups[{j}].patterns",
                        f"{pname} is also matched by param_groups[{i}]; every parameter must land in exactly one group")
    return OptimizerPlan(name, settings, tuple(groups))


def _check_group_names(entries: Sequence[training_pb2.ParamGroup]) -> None:
    """Every group's label (its ``name``, else ``param_groups[i]``) is unique and not ``default``. A clash is
    refused at a name the request set: an explicit name that is another unnamed group's default label is
    that name's fault, not the unnamed group's."""
    unnamed = {f"param_groups[{k}]": k for k, g in enumerate(entries) if not g.name}
    seen: dict[str, int] = {}
    for i, g in enumerate(entries):
        field, name = f"optimizer.param_groups[{i}].name", g.name
        if not name:
            continue
        if name == "default":
            raise FieldError(field, "'default' is taken: it labels the default group (the parameters no "
                            "param_groups entry matches); group names must be unique and not 'default'")
        if name in seen:
            raise FieldError(field, f"{name!r} is taken by param_groups[{seen[name]}]; group names must be unique "
                            "and not 'default'")
        if name in unnamed:
            k = unnamed[name]
            raise FieldError(field, f"{name!r} is taken: it is the default label of param_groups[{k}], which has no "
                            "name (a group without a name is labelled param_groups[i]); group names must be unique "
                            "and not 'default'")
        seen[name] = i


#: float32's largest value. torch's optimizers hand the learning rate (Adam and AdamW: their first step's
#: lr / (1 - betas[0])), weight_decay (not AdamW's: it scales the parameters) and Nesterov's momentum to the
#: float32 parameters' kernels as float32 numbers, and torch refuses a larger one ("value cannot be converted
#: to type float without overflow": the job failed as an internal error). Every other setting is used as a
#: float64 number (a huge eps or lr_decay trains, or ends FAILED at a NaN loss). Measured on torch 2.13:
#: tests/unit/test_training_spec.py, test_optimizer_numbers_beyond_float32_are_refused_where_torch_fails.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _largest_lr(name: str, settings: Mapping[str, Any]) -> tuple[float, str]:
    """The largest learning rate torch's ``name`` can apply with ``settings`` (Adam's: the largest whose first
    step fits; later steps are smaller, as 1 - beta1**t grows), and why."""
    if name not in ("adam", "adamw"):
        return FLOAT32_MAX, f"{name} applies it to the float32 parameters as a float32 number"
    beta1 = float(settings.get("betas", (0.9, 0.999))[0])
    lr = FLOAT32_MAX * (1 - beta1)  # the largest lr whose first step, lr / (1 - beta1) as torch computes it, fits
    while lr / (1 - beta1) > FLOAT32_MAX:
        lr = math.nextafter(lr, 0.0)
    while math.nextafter(lr, math.inf) / (1 - beta1) <= FLOAT32_MAX:
        lr = math.nextafter(lr, math.inf)
    return lr, (f"{name}'s step moves the parameters by up to lr / (1 - betas[0]) (betas[0] {beta1!r}; the first "
                f"step by exactly that), a float32 number (at most {FLOAT32_MAX!r})")


def _check_float32_settings(optimizer: OptimizerPlan, schedule: SchedulePlan | None, epochs: int,
                            steps_per_epoch: int) -> None:
    """Refuse the optimizer numbers torch would fail to convert to float32 at a step (see
    ``FLOAT32_MAX``), naming the field: the optimizer's, each param group's, the cosine schedule's
    ``eta_min`` (the learning rate every group anneals to), then a ``gamma`` above 1 that grows a
    learning rate past the limit in a later epoch."""
    name, settings = optimizer.name, optimizer.settings
    lr_limit, lr_why = _largest_lr(name, settings)
    limits = {"lr": (lr_limit, lr_why)}
    if name != "adamw":
        limits["weight_decay"] = (FLOAT32_MAX, f"{name} adds weight_decay x the parameters to their gradient as a "
                                  f"float32 number (at most {FLOAT32_MAX!r})")
    if settings.get("nesterov"):
        limits["momentum"] = (FLOAT32_MAX, "Nesterov's step adds momentum x the velocity to the gradient as a "
                              f"float32 number (at most {FLOAT32_MAX!r})")
    checked = [(f"optimizer.{key}", key, settings.get(key)) for key in ("lr", "weight_decay", "momentum")]
    for i, group in enumerate(optimizer.groups):
        checked += [(f"optimizer.param_groups[{i}].{key}", key, group.overrides.get(key))
                    for key in ("lr", "weight_decay", "momentum")]
    if schedule is not None and schedule.kind == "cosine":
        checked.append(("schedule.cosine.eta_min", "lr", schedule.settings["eta_min"]))
    for where, key, value in checked:
        if value is None or key not in limits:
            continue
        limit, why = limits[key]
        if value > limit:
            towards = " (the learning rate every group anneals to)" if where.startswith("schedule.") else ""
            raise FieldError(where, f"is {value!r}; must be <= {limit!r}{towards}: {why}")
    # SGD's momentum step adds (1 - dampening) x the gradient to the velocity as a float32 number, from its
    # second step, in every group with momentum (torch accepts any dampening; without momentum it is unused).
    dampening = settings.get("dampening")
    momenta = [settings.get("momentum", 0.0), *(g.overrides.get("momentum", 0.0) for g in optimizer.groups)]
    if dampening is not None and any(m > 0 for m in momenta) and abs(1.0 - dampening) > FLOAT32_MAX:
        raise FieldError("optimizer.dampening", f"is {dampening!r}; must be in [{-FLOAT32_MAX!r}, {FLOAT32_MAX!r}] "
                         "with momentum: sgd's momentum step adds (1 - dampening) x the gradient to the velocity as "
                         f"a float32 number (at most {FLOAT32_MAX!r} in size)")
    # RMSprop's step multiplies the squared gradient by 1 - alpha, a float32 number (and lerps by it, centered)
    alpha = settings.get("alpha")
    if name == "rmsprop" and alpha is not None and abs(1.0 - alpha) > FLOAT32_MAX:
        raise FieldError("optimizer.alpha", f"is {alpha!r}; must be <= {FLOAT32_MAX + 1.0!r}: rmsprop's step "
                         f"uses 1 - alpha as a float32 number (at most {FLOAT32_MAX!r} in size)")
    _check_scheduled_growth(optimizer, schedule, epochs, steps_per_epoch)


def _check_scheduled_growth(optimizer: OptimizerPlan, schedule: SchedulePlan | None, epochs: int,
                            steps_per_epoch: int) -> None:
    """A step or exponential schedule with ``gamma`` > 1 multiplies every group's learning rate by
    ``gamma`` at each decay (torch takes any gamma): refuse one that takes the largest learning rate past
    what the optimizer's step can convert to float32 in some epoch, naming the schedule's ``gamma``. For
    Adam and AdamW that is ``lr / (1 - beta1**t)`` at the epoch's first step ``t`` (:func:`_largest_lr`
    at ``t`` = 1), else ``lr``. Compared in log space: ``gamma ** decays`` may not fit a float."""
    if schedule is None or schedule.kind == "cosine" or schedule.settings["gamma"] <= 1:
        return
    gamma = schedule.settings["gamma"]
    default_lr = optimizer.settings.get("lr", _torch_default(optimizer.name, "lr"))
    top = max([default_lr, *(g.overrides.get("lr", default_lr) for g in optimizer.groups)])
    if top == 0:
        return
    beta1 = float(optimizer.settings.get("betas", (0.9, 0.999))[0]) if optimizer.name in ("adam", "adamw") else 0.0
    every = schedule.settings["step_size"] if schedule.kind == "step" else 1
    for epoch in range(every, epochs, every):  # the epochs whose learning rate one more decay raised
        decays = epoch // every
        first_step = epoch * steps_per_epoch + 1
        correction = -math.log1p(-beta1 ** first_step) if beta1 else 0.0  # -log(1 - beta1**t), >= 0
        if math.log(top) + decays * math.log(gamma) + correction > math.log(FLOAT32_MAX):
            step = (f"its step, lr / (1 - betas[0]**t) at the epoch's first step t = {first_step}"
                    if beta1 else "its step's learning rate")
            raise FieldError(f"schedule.{schedule.kind}.gamma", f"is {gamma!r}; {decays} decays take the learning "
                             f"rate {top!r} past what {optimizer.name} can apply in epoch {epoch + 1} of {epochs}: "
                             f"{step}, a float32 number (at most {FLOAT32_MAX!r})")


def _torch_default(name: str, setting: str) -> float:
    """What torch's optimizer ``name`` uses for ``setting`` (``lr``, ``weight_decay``) when none is given."""
    cls, _ = OPTIMIZERS[name]
    return float(inspect.signature(cls).parameters[setting].default)


def _schedule(request: training_pb2.TrainJobRequest, epochs: int) -> SchedulePlan | None:
    kind = request.schedule.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "step":
        s = request.schedule.step
        if s.step_size < 1:
            raise FieldError("schedule.step.step_size", f"is {s.step_size}; must be >= 1 (epochs)")
        gamma = _finite(s.gamma, "schedule.step.gamma", 0.0) if s.HasField("gamma") else 0.1  # torch: any
        return SchedulePlan("step", {"step_size": s.step_size, "gamma": gamma})
    if kind == "cosine":
        c = request.schedule.cosine
        if c.t_max < 0:
            raise FieldError("schedule.cosine.t_max", f"is {c.t_max}; must be >= 1 (epochs), or 0 for the job's epochs")
        return SchedulePlan("cosine", {"T_max": c.t_max or epochs,
                                       "eta_min": _finite(c.eta_min, "schedule.cosine.eta_min", 0.0)})
    gamma = request.schedule.exponential.gamma
    if gamma == 0:  # torch takes 0, but this field has no default and 0 is what "not set" reads as
        raise FieldError("schedule.exponential.gamma", "is 0 (not set); must be > 0: the factor the learning rate "
                         "is multiplied by every epoch, e.g. 0.9")
    return SchedulePlan("exponential", {"gamma": _finite(gamma, "schedule.exponential.gamma", 0.0, lo_open=True)})


def _metrics(request: training_pb2.TrainJobRequest, dataset: Dataset, target: torch.Tensor) -> tuple[str, ...]:
    seen: list[str] = []
    for i, m in enumerate(request.metrics):
        field = f"metrics[{i}]"
        if m not in METRICS:
            raise FieldError(field, f"is {m!r}; metrics are {', '.join(METRICS)}")
        if m in seen:
            raise FieldError(field, f"{m!r} is listed twice")
        if m == "accuracy" and not dataset.classification:
            raise FieldError(field, "accuracy needs class labels; this job's data is regression (use mae or rmse)")
        if m in ("mae", "rmse") and not target.is_floating_point():
            raise FieldError(field, f"{m} compares the output with a floating-point target; this loss takes class "
                            "indices (use accuracy)")
        seen.append(m)
    return tuple(seen)


def plan_job(
    request: training_pb2.TrainJobRequest, registry: Registry, limits: TrainingLimits | None = None
) -> JobPlan:
    """Validate ``request`` and build its data; raises :class:`FieldError` naming the field at fault."""
    limits = limits or TrainingLimits()
    reply_encoding(request.output_encoding, "values")  # an unknown number: refused before any work
    if "\x00" in request.name:  # PostgreSQL's text cannot hold it: both job stores refuse it alike
        raise FieldError("name", "contains a NUL character (U+0000); a job's name is a label for listings, "
                         "text without NUL")
    _check_tensor_limits(request, limits)
    r = request.regularization
    reg = Regularization(r.l1, r.l2, tuple(r.include), tuple(r.exclude))
    check_patterns(reg, [(f"optimizer.param_groups[{i}].patterns", g.patterns)  # before any data is built
                         for i, g in enumerate(request.optimizer.param_groups)])
    model = _model(request, limits)
    if request.epochs < 1:
        raise FieldError("epochs", f"is {request.epochs}{' (not set)' if request.epochs == 0 else ''}; must be >= 1: "
                         "how many passes over the training data, e.g. \"epochs\": 10")
    if request.epochs > limits.max_epochs:
        raise _limit("epochs", "epochs", request.epochs, limits.max_epochs, "max_epochs")
    if request.batch_size < 0:
        raise FieldError("batch_size", f"is {request.batch_size}; must be >= 1 (0: the default, {DEFAULT_BATCH_SIZE})")
    if request.seed < 0:
        raise FieldError("seed", f"is {request.seed}; must be >= 0")
    world_size = _world_size(request, limits)
    if request.nodes < 0 or (request.nodes > 1 and world_size % request.nodes):
        raise FieldError("nodes", f"is {request.nodes}; must be >= 1 (0: one machine) and divide world_size "
                        f"({world_size}): every machine runs world_size / nodes ranks")
    spec, kwargs, pred_name, target_name, extras = _loss(request, registry, limits)
    size, make_data, sent_as = _data(request, limits)
    out_features, form = _outputs(spec, target_name, size)
    _check_sizes(request, model, size, out_features, limits)
    dataset = make_data()
    target = _target(dataset, form)
    in_features = size.features

    fraction = _finite(request.data.validation_fraction, "data.validation_fraction", 0.0, 1.0, hi_open=True)
    train_index, val_index = split(len(dataset), fraction, request.seed)
    if len(train_index) < 1:
        raise FieldError("data.validation_fraction", f"leaves no training sample out of {len(dataset)}")
    batch_size = min(request.batch_size or DEFAULT_BATCH_SIZE, len(train_index))
    _check_divisible(world_size, len(train_index), batch_size)
    steps_per_epoch = -(-len(train_index) // batch_size)
    steps = request.epochs * steps_per_epoch
    if steps > limits.max_steps:
        raise _limit("epochs", f"{request.epochs} epochs of {len(train_index)} samples in batches of {batch_size} "
                     "make a total of optimizer steps that", steps, limits.max_steps, "max_steps")

    shapes = dict(build_model(model, in_features, out_features, device="meta").named_parameters())
    names = list(shapes)
    for key, factor in (("l1", 1.0), ("l2", 0.5)):  # the penalty l1 x sum|p| (0.5 x l2 x sum p^2): float32, as
        value = _finite(getattr(reg, key), f"regularization.{key}", 0.0)  # the parameters: inf from the start
        if value * factor > FLOAT32_MAX:
            raise FieldError(f"regularization.{key}", f"is {value!r}; must be <= {FLOAT32_MAX / factor!r}: the "
                             f"penalty{' (0.5 x l2 x the sum of squares)' if factor != 1.0 else ''} is a float32 "
                             "number, like the model's parameters, and would be infinite at the first step")
    covered = covered_parameters(shapes, reg) if (reg.l1 or reg.l2) else []
    if (reg.l1 or reg.l2) and not covered:
        raise covers_nothing(reg, f"the model's parameters ({', '.join(names)})")
    optimizer = _optimizer(request, names)
    schedule = _schedule(request, request.epochs)
    _check_float32_settings(optimizer, schedule, request.epochs, steps_per_epoch)
    metrics = _metrics(request, dataset, target)
    rate = DEFAULT_STEP_EVENTS_PER_SECOND
    if request.HasField("step_events_per_second"):
        rate = _finite(request.step_events_per_second, "step_events_per_second", 0.0)

    encoding = reply_encoding(request.output_encoding, sent_as or "values")

    plan = JobPlan(
        model=model, loss=LossPlan(spec, kwargs, pred_name, target_name, extras), regularization=reg,
        optimizer=optimizer, schedule=schedule, data=dataset, target=target, in_features=in_features,
        out_features=out_features, train_index=train_index, val_index=val_index, epochs=request.epochs,
        batch_size=batch_size, seed=request.seed, metrics=metrics, step_events_per_second=rate,
        encoding=encoding, name=request.name, covered=tuple(covered), world_size=world_size,
        nodes=max(request.nodes, 1),
    )
    _check_shardable_loss(plan)
    return _with_warnings(plan)


def _world_size(request: training_pb2.TrainJobRequest, limits: TrainingLimits) -> int:
    """``world_size`` (0 means 1), within the server's ``--max-world-size``."""
    if request.world_size < 0:
        raise FieldError("world_size", f"is {request.world_size}; must be >= 1 (0: one process)")
    world_size = request.world_size or 1
    if world_size > limits.max_world_size:
        raise _limit("world_size", "world_size", world_size, limits.max_world_size, "max_world_size")
    return world_size


def _check_divisible(world_size: int, n_train: int, batch_size: int) -> None:
    """Every rank trains on the same number of samples of every batch: refused, never padded (padding
    repeats samples, so the run would differ from the one-process run)."""
    if world_size == 1:
        return
    if n_train % world_size:
        raise FieldError("world_size", f"the training split has {n_train} samples, which world_size {world_size} "
                        "does not divide: every rank must get the same number of samples (lossd refuses rather "
                        "than pads with repeated samples); change the data size or data.validation_fraction")
    if batch_size % world_size:
        raise FieldError("batch_size", f"is {batch_size}, which world_size {world_size} does not divide: each rank "
                        "trains on batch_size / world_size samples of every batch")


#: Settings that make a loss that is otherwise a mean or sum of per-sample terms depend on the whole batch
#: (the registration's ``batch_coupled`` names whole losses; these are one setting of a loss): the loss,
#: the param, when the bound value couples the batch, how, and the value that does not. Found by
#: splitting batches of every trainable loss in two and comparing (docs/scaling.md, "What is refused
#: rather than approximated").
_ONE_SIGNAL = "the model's whole output (batch x outputs) is one signal, whose histogram spans the batch"
_BATCH_COUPLING_SETTINGS: tuple[tuple[str, str, Callable[[Any], bool], str, str], ...] = (
    ("sigmoid_focal_loss", "normalized", bool, "it divides by the sum of the focal factors over the whole batch",
     "false"),
    ("mutual_information_loss", "signal_dims", lambda dims: dims >= 2, _ONE_SIGNAL, "1"),
    ("normalized_mutual_information_loss", "signal_dims", lambda dims: dims >= 2, _ONE_SIGNAL, "1"),
)


def _check_shardable_loss(plan: JobPlan) -> None:
    """With several ranks, each computes the loss on its shard of a batch and DDP averages the gradients:
    that equals the whole batch's gradient only when the loss is a mean (or sum) of per-sample terms:
    the registration says which losses are not (``batch_coupled``, ``mean_normalizer``), and
    ``_BATCH_COUPLING_SETTINGS`` which settings make one so. An ``ignore_index`` matters only where the
    training split's targets hold it: the job's data is known here, so one that occurs nowhere in them (the
    default -100 with class labels or 0/1 targets) leaves every batch's mean a plain mean and is accepted."""
    if plan.world_size == 1:
        return
    spec, reduction = plan.loss.spec, plan.reduction
    name = spec.name
    # batchmean (kl_div's sum / batch size) is a mean over the shard's samples: the ranks' shards are equal
    if reduction not in ("mean", "sum", "batchmean") or spec.batch_coupled:
        raise FieldError("loss.name", f"{name} is not a mean or sum of per-sample terms, so its gradient on a "
                        f"batch is not the average of its gradients on the batch's shards; world_size "
                        f"{plan.world_size} would train another objective: use world_size 1")
    for loss, param, couples, how, fine in _BATCH_COUPLING_SETTINGS:
        value = plan.loss.kwargs.get(param)
        if name == loss and couples(value):
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            raise FieldError(f"loss.params.{param}", f"{name} with {param} {shown}: {how}, so its value on a batch is "
                            "not the mean or sum of its values on the batch's shards; world_size "
                            f"{plan.world_size} would train another objective: use world_size 1 or {param} {fine}")
    if reduction == "mean" and spec.mean_normalizer == "weight":
        if "weight" in plan.loss.extras:
            raise FieldError("loss.inputs.weight", f"{name} with class weights and reduction 'mean' divides by the "
                            "batch's total weight, which differs between the ranks' shards; with world_size "
                            f"{plan.world_size} use reduction 'sum' or world_size 1")
        ignore_index = plan.loss.kwargs.get("ignore_index")
        if isinstance(ignore_index, int):
            ignored = int((plan.target[plan.train_index] == ignore_index).sum())
            if ignored:
                raise FieldError("loss.params.ignore_index", f"{name} with ignore_index {ignore_index} and reduction "
                                f"'mean' divides by the batch's count of kept elements, which differs between the "
                                f"ranks' shards: {ignored} of the training split's target values are "
                                f"{ignore_index}; with world_size {plan.world_size} use reduction 'sum' or "
                                "world_size 1")


#: How an L2 term and each optimizer's weight_decay add up (torch 2.13's update rules). sgd, adam, rmsprop
#: and adagrad add weight_decay x theta to the gradient before their own scaling, as the L2 term's gradient
#: is; adamw's decay is decoupled: it multiplies theta by 1 - lr x weight_decay, outside Adam's scaling.
_STACKING: Mapping[str, str] = {
    "sgd": "for sgd, the gradient gets l2*theta + weight_decay*theta",
    **{name: f"for {name}, the gradient gets l2*theta + weight_decay*theta, which {name}'s per-parameter scaling "
       "then treats alike" for name in ("adam", "rmsprop", "adagrad")},
    "adamw": ("for adamw, the L2 term's gradient l2*theta goes through Adam's scaling while weight_decay, "
              "decoupled, shrinks theta by lr*weight_decay*theta at each step"),
}


def _with_warnings(plan: JobPlan) -> JobPlan:
    """Warn when an L2 term and optimizer weight decay apply to the same parameters (they stack); not for
    a group frozen by ``lr`` 0, whose parameters neither term moves (a cosine schedule with ``eta_min``
    > 0 raises every group's rate towards it: nothing stays frozen there)."""
    if not plan.regularization.l2:
        return plan
    default, per_group, _ = assign_groups(list(plan.covered), plan.optimizer.groups)
    base = plan.optimizer.settings.get("weight_decay", _torch_default(plan.optimizer.name, "weight_decay"))
    base_lr = plan.optimizer.settings.get("lr", _torch_default(plan.optimizer.name, "lr"))
    thaws = plan.schedule is not None and plan.schedule.kind == "cosine" and plan.schedule.settings["eta_min"] > 0
    decayed = [n for n in default if base > 0 and (base_lr > 0 or thaws)]
    for g, names in zip(plan.optimizer.groups, per_group):
        if g.overrides.get("weight_decay", base) > 0 and (g.overrides.get("lr", base_lr) > 0 or thaws):
            decayed += names
    if not decayed:
        return plan
    text = (f"regularization.l2 ({plan.regularization.l2:g}) and the optimizer's weight_decay both apply to "
            f"{', '.join(sorted(decayed))}: they stack ({_STACKING[plan.optimizer.name]}); use one of them")
    return dataclasses.replace(plan, warnings=(*plan.warnings, text))


def check_loss_accepts_model(plan: JobPlan, max_loss_work: int = MAX_LOSS_WORK) -> None:
    """Run the loss on the model's output for a few samples (zero weights, no RNG), so that a shape or
    dtype mismatch is refused at submission rather than failing the job; and on as many samples as the
    smallest batch the job gives it (an epoch's last batch on a rank, the validation split), when fewer:
    a loss that needs two rows refused a last batch of one at step 6. The most rows it is given at once
    may build at most ``max_loss_work`` elements beyond them (``--max-loss-work``)."""
    model = build_model(plan.model, plan.in_features, plan.out_features, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.eval()
    first = min(4, len(plan.train_index))
    per_rank = len(plan.train_index) // plan.world_size
    last = per_rank % (plan.batch_size // plan.world_size)
    sizes = [(first, "")]
    for size, what in ((last, f"the last batch of each epoch ({last} per rank)"),
                       (len(plan.val_index), f"the validation split ({len(plan.val_index)})")):
        if 0 < size < first:
            sizes.append((size, f" on {what}"))
    for size, where in sizes:
        index = plan.train_index[:size]
        out = model(plan.data.x[index])
        shapes = f"the model output {list(out.shape)} with the target {list(plan.target[index].shape)}{where}"
        try:
            with torch.enable_grad():
                value = plan.loss(out.detach().requires_grad_(True), plan.target[index])
        except FieldError as e:
            raise FieldError("loss.name", f"{plan.loss.spec.name} refuses {shapes}: {e}") from e
        except LossCrashed:
            raise  # an internal error (TrainJob answers INTERNAL), not the spec's fault
        except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError) as e:
            raise FieldError("loss.name", f"{plan.loss.spec.name} fails on {shapes}: {first_line(e)}") from e
        if value.dim() != 0:
            raise FieldError("loss.params.reduction", f"{plan.loss.spec.name} gives shape {list(value.shape)}; "
                            "training needs a scalar loss ('mean' or 'sum')")
    _check_output_range(plan, model(plan.data.x[plan.train_index[:first]]), plan.target[plan.train_index[:first]])
    _check_loss_work(plan, out, plan.target[plan.train_index[:first]], max_loss_work)


def _check_loss_work(plan: JobPlan, out: torch.Tensor, target: torch.Tensor, max_loss_work: int) -> None:
    """Refuse a job whose loss would build more than ``max_loss_work`` elements beyond its inputs (``check_work``)
    on the most rows it is given at once: a rank's share of a batch, or the whole validation split at each
    epoch's end. A 350-byte spec of nt_xent_loss with a batch of 4,000 took a worker 1 GB (an audit, 2026-12-06),
    and the validation split's (2N)² matrix is built in one piece."""
    per_rank, val = plan.batch_size // plan.world_size, len(plan.val_index)
    rows = max(per_rank, val)
    bound = {**plan.loss.extras,
             plan.loss.prediction: torch.empty((rows, *out.shape[1:]), dtype=out.dtype, device="meta"),
             plan.loss.target: torch.empty((rows, *target.shape[1:]), dtype=target.dtype, device="meta")}
    try:
        check_work(plan.loss.spec, bound, plan.loss.kwargs, limit=max_loss_work)
    except FieldError as e:
        if per_rank >= val:
            field, where = "batch_size", f"a batch of {per_rank} samples" + (" per rank" if plan.world_size > 1 else "")
        else:
            field, where = "data.validation_fraction", f"the validation split ({val} samples), which it is given whole"
        why = e.message.removesuffix(": send fewer rows per call")
        raise FieldError(field, f"on {where}, {why}: make it smaller", e.code) from e


#: Outputs a model certainly produces, by its output activation, beyond the zeros of the trial above: none's are any
#: real numbers, tanh's lie in (-1, 1) (sigmoid's, softmax's and log_softmax's are what zero weights give, in kind).
_OUTPUT_PROBES: dict[str, tuple[float, ...]] = {"": (-1.0, 2.0), "none": (-1.0, 2.0), "tanh": (-0.5, 0.5)}


def _check_output_range(plan: JobPlan, out: torch.Tensor, target: torch.Tensor) -> None:
    """Refuse a loss that refuses outputs the model's activation produces (a loss that takes probabilities in
    [0, 1] on raw outputs): the zero-weight trial gives 0 (0.5 after a sigmoid), inside [0, 1], and the job
    FAILED at its first step."""
    activation = plan.model.output_activation
    for probe in _OUTPUT_PROBES.get(activation, ()):
        try:
            with torch.enable_grad():
                plan.loss(torch.full_like(out, probe).requires_grad_(True), target)
        except FieldError as e:
            gives = "any real number" if activation in ("", "none") else "values in (-1, 1)"
            raise FieldError(f"model.{plan.model.kind}.output_activation",
                             f"is {activation or 'none'!r}, which gives {gives}, and {plan.loss.spec.name} refuses "
                             f"{probe!r}: {e}; choose an output activation whose values the loss takes (sigmoid: "
                             "(0, 1); softmax: rows that sum to 1), or a loss that takes logits") from e
        except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError):
            pass  # not the loss's verdict on the values: the trial above judged the shapes and dtypes
