from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENSOR_ENCODING_UNSPECIFIED: _ClassVar[TensorEncoding]
    TENSOR_ENCODING_RAW: _ClassVar[TensorEncoding]
    TENSOR_ENCODING_VALUES: _ClassVar[TensorEncoding]
TENSOR_ENCODING_UNSPECIFIED: TensorEncoding
TENSOR_ENCODING_RAW: TensorEncoding
TENSOR_ENCODING_VALUES: TensorEncoding

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "raw", "values")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw: bytes
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw: _Optional[bytes] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class EvaluateLossRequest(_message.Message):
    __slots__ = ("loss", "inputs", "params", "grad_inputs", "grad_output", "output_encoding", "terms", "parameters", "regularization", "allow_non_finite", "strict")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    LOSS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    GRAD_INPUTS_FIELD_NUMBER: _ClassVar[int]
    GRAD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REGULARIZATION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    loss: str
    inputs: _containers.MessageMap[str, Tensor]
    params: _struct_pb2.Struct
    grad_inputs: _containers.RepeatedScalarFieldContainer[str]
    grad_output: Tensor
    output_encoding: TensorEncoding
    terms: _containers.RepeatedCompositeFieldContainer[LossTerm]
    parameters: _containers.MessageMap[str, Tensor]
    regularization: Regularization
    allow_non_finite: bool
    strict: bool
    def __init__(self, loss: _Optional[str] = ..., inputs: _Optional[_Mapping[str, Tensor]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., grad_inputs: _Optional[_Iterable[str]] = ..., grad_output: _Optional[_Union[Tensor, _Mapping]] = ..., output_encoding: _Optional[_Union[TensorEncoding, str]] = ..., terms: _Optional[_Iterable[_Union[LossTerm, _Mapping]]] = ..., parameters: _Optional[_Mapping[str, Tensor]] = ..., regularization: _Optional[_Union[Regularization, _Mapping]] = ..., allow_non_finite: _Optional[bool] = ..., strict: _Optional[bool] = ...) -> None: ...

class LossTerm(_message.Message):
    __slots__ = ("loss", "weight", "params", "name", "inputs", "transforms")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TransformsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LOSS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    loss: str
    weight: float
    params: _struct_pb2.Struct
    name: str
    inputs: _containers.ScalarMap[str, str]
    transforms: _containers.ScalarMap[str, str]
    def __init__(self, loss: _Optional[str] = ..., weight: _Optional[float] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., name: _Optional[str] = ..., inputs: _Optional[_Mapping[str, str]] = ..., transforms: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Regularization(_message.Message):
    __slots__ = ("l1", "l2", "include", "exclude")
    L1_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    l1: float
    l2: float
    include: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, l1: _Optional[float] = ..., l2: _Optional[float] = ..., include: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("decode_ms", "forward_ms", "backward_ms", "encode_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MS_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    forward_ms: float
    backward_ms: float
    encode_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., forward_ms: _Optional[float] = ..., backward_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ...) -> None: ...

class EvaluateLossResponse(_message.Message):
    __slots__ = ("value", "loss", "grads", "loss_name", "timing", "parts", "parameter_grads", "regularized", "warnings")
    class GradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class PartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParameterGradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    GRADS_FIELD_NUMBER: _ClassVar[int]
    LOSS_NAME_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_GRADS_FIELD_NUMBER: _ClassVar[int]
    REGULARIZED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    value: float
    loss: Tensor
    grads: _containers.MessageMap[str, Tensor]
    loss_name: str
    timing: Timing
    parts: _containers.ScalarMap[str, float]
    parameter_grads: _containers.MessageMap[str, Tensor]
    regularized: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, value: _Optional[float] = ..., loss: _Optional[_Union[Tensor, _Mapping]] = ..., grads: _Optional[_Mapping[str, Tensor]] = ..., loss_name: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., parts: _Optional[_Mapping[str, float]] = ..., parameter_grads: _Optional[_Mapping[str, Tensor]] = ..., regularized: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluateLossStreamRequest(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: EvaluateLossRequest
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[EvaluateLossRequest, _Mapping]] = ...) -> None: ...

class EvaluateLossStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: EvaluateLossResponse
    error: Error
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[EvaluateLossResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EvaluateLossBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EvaluateLossRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[EvaluateLossRequest, _Mapping]]] = ...) -> None: ...

class EvaluateLossBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EvaluateLossBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EvaluateLossBatchResult, _Mapping]]] = ...) -> None: ...

class EvaluateLossBatchResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: EvaluateLossResponse
    error: Error
    def __init__(self, response: _Optional[_Union[EvaluateLossResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class ListLossesRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: str
    def __init__(self, filter: _Optional[str] = ...) -> None: ...

class ListLossesResponse(_message.Message):
    __slots__ = ("losses",)
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    losses: _containers.RepeatedCompositeFieldContainer[LossInfo]
    def __init__(self, losses: _Optional[_Iterable[_Union[LossInfo, _Mapping]]] = ...) -> None: ...

class LossInfo(_message.Message):
    __slots__ = ("name", "aliases", "description", "inputs", "params", "source", "dtypes", "notes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputInfo]
    params: _containers.RepeatedCompositeFieldContainer[ParamInfo]
    source: str
    dtypes: _containers.RepeatedScalarFieldContainer[str]
    notes: str
    def __init__(self, name: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputInfo, _Mapping]]] = ..., params: _Optional[_Iterable[_Union[ParamInfo, _Mapping]]] = ..., source: _Optional[str] = ..., dtypes: _Optional[_Iterable[str]] = ..., notes: _Optional[str] = ...) -> None: ...

class InputInfo(_message.Message):
    __slots__ = ("name", "role", "dtype_kind", "differentiable", "required", "aliases", "doc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_KIND_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIABLE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    dtype_kind: str
    differentiable: bool
    required: bool
    aliases: _containers.RepeatedScalarFieldContainer[str]
    doc: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., dtype_kind: _Optional[str] = ..., differentiable: _Optional[bool] = ..., required: _Optional[bool] = ..., aliases: _Optional[_Iterable[str]] = ..., doc: _Optional[str] = ...) -> None: ...

class ParamInfo(_message.Message):
    __slots__ = ("name", "type", "default", "choices", "range", "doc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default: _struct_pb2.Value
    choices: _containers.RepeatedScalarFieldContainer[str]
    range: str
    doc: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., choices: _Optional[_Iterable[str]] = ..., range: _Optional[str] = ..., doc: _Optional[str] = ...) -> None: ...
