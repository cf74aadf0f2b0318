"""The seed's rings job, trained by lossd: validation accuracy >= 0.90.

An MLP (2 -> 4 -> 8 -> 1, ReLU, sigmoid output) learns to tell a ring of
radius 5 (2000 positives) from a ring of radius 8 (6000 negatives) with the
seed's focal loss (gamma 2, alpha 0.75), L1 and L2 penalties (0.001 each, on
the weights) and Adam (lr 0.002): 30 epochs, batches of 100, seed 42. It is
the same job as the README's grpcurl call, sent here with the generated gRPC
stubs; progress streams back as events.

Run ``make run`` in another terminal, then ``python examples/seed_rings.py``
(``LOSSD_TARGET`` picks another server).
"""

from __future__ import annotations

import os
import sys

import grpc
from google.protobuf import json_format

from lossd.v1 import training_pb2, training_pb2_grpc

SPEC = {
    "model": {"mlp": {"hidden": [4, 8], "activation": "relu", "output_activation": "sigmoid"}},
    "data": {"builtin": {"name": "rings"}, "validation_fraction": 0.3},
    "loss": {"name": "binary_focal_loss", "params": {"gamma": 2, "alpha": 0.75}},
    "regularization": {"l1": 0.001, "l2": 0.001},
    "optimizer": {"name": "adam", "lr": 0.002},
    "epochs": 30,
    "batch_size": 100,
    "seed": 42,
    "metrics": ["accuracy"],
}


def main() -> int:
    target = os.environ.get("LOSSD_TARGET", "127.0.0.1:50051")
    request = json_format.ParseDict(SPEC, training_pb2.TrainJobRequest())
    with grpc.insecure_channel(target) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        for reply in stub.TrainJob(request):
            event = reply.event
            if event.kind == training_pb2.JOB_EVENT_KIND_EPOCH and event.epoch % 5 == 0:
                parts = "  ".join(f"{k} {v:.4f}" for k, v in sorted(event.loss_parts.items()))
                print(f"epoch {event.epoch:2d}/{event.epochs}  objective {event.loss:.4f} ({parts})  "
                      f"val_accuracy {event.metrics['val_accuracy']:.4f}")
            elif event.kind == training_pb2.JOB_EVENT_KIND_STATE:
                print(f"job {event.job_id}: {training_pb2.JobState.Name(event.state)}  {event.message}")
    accuracy = event.metrics["val_accuracy"]
    print(f"validation accuracy {accuracy:.4f}; trained parameters: {', '.join(sorted(event.parameters))}")
    return 0 if event.state == training_pb2.JOB_STATE_SUCCEEDED and accuracy >= 0.90 else 1


if __name__ == "__main__":
    sys.exit(main())
