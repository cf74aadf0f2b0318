"""Job specs for the training tests: small by default (a fraction of a second of training)."""

from __future__ import annotations

import copy
import json
from typing import Any

from google.protobuf import json_format

from lossd.v1 import training_pb2

__all__ = ["SEED_RINGS", "SEED_RINGS_JSON", "request", "small_spec", "events_from_grpcurl"]

#: The seed's grpcurl request body, exactly as issue 4 (and docs/training.md) writes it; examples/rings.json holds it.
SEED_RINGS_JSON = (
    '{"model":{"mlp":{"hidden":[4,8],"activation":"relu","output_activation":"sigmoid"}},'
    '"data":{"builtin":{"name":"rings"},"validation_fraction":0.3},'
    '"loss":{"name":"binary_focal_loss","params":{"gamma":2,"alpha":0.75}},'
    '"regularization":{"l1":0.001,"l2":0.001},"optimizer":{"name":"adam","lr":0.002},'
    '"epochs":30,"batch_size":100,"seed":42,"metrics":["accuracy"]}'
)
SEED_RINGS: dict[str, Any] = json.loads(SEED_RINGS_JSON)


def small_spec(**overrides: Any) -> dict[str, Any]:
    """A quick binary job (rings, 400 samples, 2 epochs); top-level keys in ``overrides`` replace the defaults."""
    spec: dict[str, Any] = {
        "model": {"mlp": {"hidden": [8], "output_activation": "sigmoid"}},
        "data": {"builtin": {"name": "rings", "params": {"n_positive": 100, "n_negative": 300}},
                 "validation_fraction": 0.25},
        "loss": {"name": "binary_focal_loss"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "epochs": 2,
        "batch_size": 50,
        "seed": 3,
        "metrics": ["accuracy"],
    }
    spec.update(copy.deepcopy(overrides))
    return spec


def request(spec: dict[str, Any]) -> training_pb2.TrainJobRequest:
    """The ``TrainJobRequest`` for a JSON-style dict (as grpcurl would send it)."""
    return json_format.ParseDict(spec, training_pb2.TrainJobRequest())


def events_from_grpcurl(stdout: str) -> list[dict[str, Any]]:
    """The ``event`` objects of a grpcurl server-streaming output (concatenated JSON objects)."""
    decoder, pos, events = json.JSONDecoder(), 0, []
    while True:
        while pos < len(stdout) and stdout[pos].isspace():
            pos += 1
        if pos >= len(stdout):
            return events
        obj, pos = decoder.raw_decode(stdout, pos)
        events.append(obj["event"])
