"""Weight decay on the weights only (param groups) equals an L2 term on the weights, through lossd.

Two training jobs on the same data and seed:

1. SGD whose ``param_groups`` put ``weight_decay`` 0.01 on ``*.weight`` (and
   none on the biases): the seed's "decay on weights, not on biases";
2. SGD without weight decay, plus ``regularization.l2`` 0.01, which adds
   0.5 * 0.01 * sum(theta^2) over the weights (lossd's default coverage:
   not biases).

The gradient of 0.5 * l2 * theta^2 is l2 * theta, exactly what SGD's
weight_decay adds, so both jobs end with the same parameters -- up to float32
rounding: SGD adds ``grad + wd * theta`` in one fused operation, autograd
adds the L2 gradient to the loss gradient separately, so a last bit can
differ now and then (here the largest difference is about 1e-7).

Run ``make run`` in another terminal, then ``python examples/seed_weight_decay.py``.
"""

from __future__ import annotations

import copy
import os
import sys

import grpc
import numpy as np
from google.protobuf import json_format

from lossd.v1 import lossd_pb2, training_pb2, training_pb2_grpc

BASE = {
    "model": {"mlp": {"hidden": [8], "activation": "tanh", "output_activation": "sigmoid"}},
    "data": {"builtin": {"name": "rings", "params": {"n_positive": 500, "n_negative": 1500}},
             "validation_fraction": 0.2},
    "loss": {"name": "binary_focal_loss"},
    "epochs": 5,
    "batch_size": 50,
    "seed": 7,
    "metrics": ["accuracy"],
    "step_events_per_second": 0,
}
LAMBDA = 0.01


def specs() -> tuple[dict, dict]:
    decay = copy.deepcopy(BASE)
    decay["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                          "param_groups": [{"patterns": ["*.weight"], "weight_decay": LAMBDA, "name": "weights"}]}
    l2 = copy.deepcopy(BASE)
    l2["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    l2["regularization"] = {"l2": LAMBDA}
    return decay, l2


def train(stub: training_pb2_grpc.TrainingServiceStub, spec: dict) -> dict[str, np.ndarray]:
    request = json_format.ParseDict(spec, training_pb2.TrainJobRequest())
    request.output_encoding = lossd_pb2.TENSOR_ENCODING_RAW  # exact float32 bytes
    for reply in stub.TrainJob(request):
        event = reply.event
    assert event.state == training_pb2.JOB_STATE_SUCCEEDED, event.message
    print(f"job {event.job_id}: val_accuracy {event.metrics['val_accuracy']:.4f}")
    return {name: np.frombuffer(t.raw, dtype="<f4").reshape(tuple(t.shape)) for name, t in event.parameters.items()}


def main() -> int:
    target = os.environ.get("LOSSD_TARGET", "127.0.0.1:50051")
    with grpc.insecure_channel(target) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        decay, l2 = specs()
        a, b = train(stub, decay), train(stub, l2)
    worst = max(float(np.abs(a[n] - b[n]).max()) for n in a)
    same = a.keys() == b.keys() and all(np.allclose(a[n], b[n], rtol=1e-5, atol=1e-6) for n in a)
    print(f"parameters {', '.join(sorted(a))}: largest difference {worst:.1e}")
    print("the same parameters (up to float32 rounding)" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
