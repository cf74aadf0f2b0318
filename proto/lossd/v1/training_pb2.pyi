import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lossd.v1 import lossd_pb2 as _lossd_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_INTERRUPTED: _ClassVar[JobState]

class JobEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_KIND_UNSPECIFIED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_STATE: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_STEP: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_EPOCH: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_WARNING: _ClassVar[JobEventKind]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_INTERRUPTED: JobState
JOB_EVENT_KIND_UNSPECIFIED: JobEventKind
JOB_EVENT_KIND_STATE: JobEventKind
JOB_EVENT_KIND_STEP: JobEventKind
JOB_EVENT_KIND_EPOCH: JobEventKind
JOB_EVENT_KIND_WARNING: JobEventKind

class TrainJobRequest(_message.Message):
    __slots__ = ("model", "data", "loss", "regularization", "optimizer", "schedule", "epochs", "batch_size", "seed", "metrics", "step_events_per_second", "name", "output_encoding", "detach", "world_size", "nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    REGULARIZATION_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    STEP_EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    model: ModelSpec
    data: DataSpec
    loss: TrainingLoss
    regularization: _lossd_pb2.Regularization
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    epochs: int
    batch_size: int
    seed: int
    metrics: _containers.RepeatedScalarFieldContainer[str]
    step_events_per_second: float
    name: str
    output_encoding: _lossd_pb2.TensorEncoding
    detach: bool
    world_size: int
    nodes: int
    def __init__(self, model: _Optional[_Union[ModelSpec, _Mapping]] = ..., data: _Optional[_Union[DataSpec, _Mapping]] = ..., loss: _Optional[_Union[TrainingLoss, _Mapping]] = ..., regularization: _Optional[_Union[_lossd_pb2.Regularization, _Mapping]] = ..., optimizer: _Optional[_Union[OptimizerSpec, _Mapping]] = ..., schedule: _Optional[_Union[ScheduleSpec, _Mapping]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., metrics: _Optional[_Iterable[str]] = ..., step_events_per_second: _Optional[float] = ..., name: _Optional[str] = ..., output_encoding: _Optional[_Union[_lossd_pb2.TensorEncoding, str]] = ..., detach: _Optional[bool] = ..., world_size: _Optional[int] = ..., nodes: _Optional[int] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("linear", "mlp")
    LINEAR_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    linear: LinearModel
    mlp: MlpModel
    def __init__(self, linear: _Optional[_Union[LinearModel, _Mapping]] = ..., mlp: _Optional[_Union[MlpModel, _Mapping]] = ...) -> None: ...

class LinearModel(_message.Message):
    __slots__ = ("output_activation",)
    OUTPUT_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    output_activation: str
    def __init__(self, output_activation: _Optional[str] = ...) -> None: ...

class MlpModel(_message.Message):
    __slots__ = ("hidden", "activation", "output_activation", "dropout")
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    hidden: _containers.RepeatedScalarFieldContainer[int]
    activation: str
    output_activation: str
    dropout: float
    def __init__(self, hidden: _Optional[_Iterable[int]] = ..., activation: _Optional[str] = ..., output_activation: _Optional[str] = ..., dropout: _Optional[float] = ...) -> None: ...

class DataSpec(_message.Message):
    __slots__ = ("builtin", "inline", "validation_fraction")
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    builtin: BuiltinData
    inline: InlineData
    validation_fraction: float
    def __init__(self, builtin: _Optional[_Union[BuiltinData, _Mapping]] = ..., inline: _Optional[_Union[InlineData, _Mapping]] = ..., validation_fraction: _Optional[float] = ...) -> None: ...

class BuiltinData(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class InlineData(_message.Message):
    __slots__ = ("x", "y", "num_classes")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    x: _lossd_pb2.Tensor
    y: _lossd_pb2.Tensor
    num_classes: int
    def __init__(self, x: _Optional[_Union[_lossd_pb2.Tensor, _Mapping]] = ..., y: _Optional[_Union[_lossd_pb2.Tensor, _Mapping]] = ..., num_classes: _Optional[int] = ...) -> None: ...

class TrainingLoss(_message.Message):
    __slots__ = ("name", "params", "inputs")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _lossd_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_lossd_pb2.Tensor, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    inputs: _containers.MessageMap[str, _lossd_pb2.Tensor]
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., inputs: _Optional[_Mapping[str, _lossd_pb2.Tensor]] = ...) -> None: ...

class OptimizerSpec(_message.Message):
    __slots__ = ("name", "lr", "weight_decay", "momentum", "dampening", "nesterov", "betas", "eps", "alpha", "centered", "amsgrad", "lr_decay", "param_groups")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    DAMPENING_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    BETAS_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    CENTERED_FIELD_NUMBER: _ClassVar[int]
    AMSGRAD_FIELD_NUMBER: _ClassVar[int]
    LR_DECAY_FIELD_NUMBER: _ClassVar[int]
    PARAM_GROUPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    lr: float
    weight_decay: float
    momentum: float
    dampening: float
    nesterov: bool
    betas: _containers.RepeatedScalarFieldContainer[float]
    eps: float
    alpha: float
    centered: bool
    amsgrad: bool
    lr_decay: float
    param_groups: _containers.RepeatedCompositeFieldContainer[ParamGroup]
    def __init__(self, name: _Optional[str] = ..., lr: _Optional[float] = ..., weight_decay: _Optional[float] = ..., momentum: _Optional[float] = ..., dampening: _Optional[float] = ..., nesterov: _Optional[bool] = ..., betas: _Optional[_Iterable[float]] = ..., eps: _Optional[float] = ..., alpha: _Optional[float] = ..., centered: _Optional[bool] = ..., amsgrad: _Optional[bool] = ..., lr_decay: _Optional[float] = ..., param_groups: _Optional[_Iterable[_Union[ParamGroup, _Mapping]]] = ...) -> None: ...

class ParamGroup(_message.Message):
    __slots__ = ("patterns", "lr", "weight_decay", "momentum", "name")
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    patterns: _containers.RepeatedScalarFieldContainer[str]
    lr: float
    weight_decay: float
    momentum: float
    name: str
    def __init__(self, patterns: _Optional[_Iterable[str]] = ..., lr: _Optional[float] = ..., weight_decay: _Optional[float] = ..., momentum: _Optional[float] = ..., name: _Optional[str] = ...) -> None: ...

class ScheduleSpec(_message.Message):
    __slots__ = ("step", "cosine", "exponential")
    STEP_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_FIELD_NUMBER: _ClassVar[int]
    step: StepSchedule
    cosine: CosineSchedule
    exponential: ExponentialSchedule
    def __init__(self, step: _Optional[_Union[StepSchedule, _Mapping]] = ..., cosine: _Optional[_Union[CosineSchedule, _Mapping]] = ..., exponential: _Optional[_Union[ExponentialSchedule, _Mapping]] = ...) -> None: ...

class StepSchedule(_message.Message):
    __slots__ = ("step_size", "gamma")
    STEP_SIZE_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    step_size: int
    gamma: float
    def __init__(self, step_size: _Optional[int] = ..., gamma: _Optional[float] = ...) -> None: ...

class CosineSchedule(_message.Message):
    __slots__ = ("t_max", "eta_min")
    T_MAX_FIELD_NUMBER: _ClassVar[int]
    ETA_MIN_FIELD_NUMBER: _ClassVar[int]
    t_max: int
    eta_min: float
    def __init__(self, t_max: _Optional[int] = ..., eta_min: _Optional[float] = ...) -> None: ...

class ExponentialSchedule(_message.Message):
    __slots__ = ("gamma",)
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    gamma: float
    def __init__(self, gamma: _Optional[float] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "state", "kind", "epoch", "epochs", "step", "total_steps", "loss", "loss_parts", "lr", "lrs", "metrics", "samples_per_second", "elapsed_s", "eta_s", "message", "time", "parameters", "history")
    class LossPartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _lossd_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_lossd_pb2.Tensor, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LOSS_PARTS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    LRS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    state: JobState
    kind: JobEventKind
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    loss_parts: _containers.ScalarMap[str, float]
    lr: float
    lrs: _containers.ScalarMap[str, float]
    metrics: _containers.ScalarMap[str, float]
    samples_per_second: float
    elapsed_s: float
    eta_s: float
    message: str
    time: _timestamp_pb2.Timestamp
    parameters: _containers.MessageMap[str, _lossd_pb2.Tensor]
    history: _containers.RepeatedCompositeFieldContainer[EpochSummary]
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., kind: _Optional[_Union[JobEventKind, str]] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., loss_parts: _Optional[_Mapping[str, float]] = ..., lr: _Optional[float] = ..., lrs: _Optional[_Mapping[str, float]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., samples_per_second: _Optional[float] = ..., elapsed_s: _Optional[float] = ..., eta_s: _Optional[float] = ..., message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parameters: _Optional[_Mapping[str, _lossd_pb2.Tensor]] = ..., history: _Optional[_Iterable[_Union[EpochSummary, _Mapping]]] = ...) -> None: ...

class EpochSummary(_message.Message):
    __slots__ = ("epoch", "loss", "loss_parts", "metrics", "lr")
    class LossPartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LOSS_PARTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: float
    loss_parts: _containers.ScalarMap[str, float]
    metrics: _containers.ScalarMap[str, float]
    lr: float
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[float] = ..., loss_parts: _Optional[_Mapping[str, float]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., lr: _Optional[float] = ...) -> None: ...

class TrainJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: JobEvent
    def __init__(self, event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq", "output_encoding")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    output_encoding: _lossd_pb2.TensorEncoding
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., output_encoding: _Optional[_Union[_lossd_pb2.TensorEncoding, str]] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: JobEvent
    def __init__(self, event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "name", "state", "message", "created_at", "updated_at", "epoch", "epochs", "step", "total_steps", "loss", "metrics", "last_seq", "resumes", "spec", "world_size")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    state: JobState
    message: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    metrics: _containers.ScalarMap[str, float]
    last_seq: int
    resumes: int
    spec: TrainJobRequest
    world_size: int
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., last_seq: _Optional[int] = ..., resumes: _Optional[int] = ..., spec: _Optional[_Union[TrainJobRequest, _Mapping]] = ..., world_size: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "include_parameters", "output_encoding")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    include_parameters: bool
    output_encoding: _lossd_pb2.TensorEncoding
    def __init__(self, job_id: _Optional[str] = ..., include_parameters: _Optional[bool] = ..., output_encoding: _Optional[_Union[_lossd_pb2.TensorEncoding, str]] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _lossd_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_lossd_pb2.Tensor, _Mapping]] = ...) -> None: ...
    JOB_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    parameters: _containers.MessageMap[str, _lossd_pb2.Tensor]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., parameters: _Optional[_Mapping[str, _lossd_pb2.Tensor]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "limit", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...
