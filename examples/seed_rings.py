"""The seed's rings job, trained by lossd: validation accuracy >= 0.90.

An MLP (2 -> 4 -> 8 -> 1, ReLU, sigmoid output) learns to tell a ring of
radius 5 (2000 positives) from a ring of radius 8 (6000 negatives) with the
seed's focal loss (gamma 2, alpha 0.75), L1 and L2 penalties (0.001 each, on
the weights) and Adam (lr 0.002): 30 epochs, batches of 100, seed 42. It is
the job of ``examples/rings.json`` (``lossd train examples/rings.json``) and of
docs/training.md's grpcurl call, sent here with the SDK's
``client.train``: a progress bar (or, without tqdm, a line per epoch) on stderr,
then every fifth epoch of the returned history.

Run ``make run`` in another terminal, then ``python examples/seed_rings.py``
(``LOSSD_TARGET`` picks another server).
"""

from __future__ import annotations

import sys

from lossd.client import Client

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
    with Client() as client:  # LOSSD_TARGET, default 127.0.0.1:50051
        result = client.train(SPEC, progress=True)
    for row in result.history[4::5]:
        parts = "  ".join(f"{k} {v:.4f}" for k, v in row["loss_parts"].items())
        print(f"epoch {row['epoch']:2d}/{SPEC['epochs']}  objective {row['loss']:.4f} ({parts})  "
              f"val_accuracy {row['metrics']['val_accuracy']:.4f}")
    print(f"job {result.job_id}: {result.state}  {result.message}")
    accuracy = result.metrics.get("val_accuracy", 0.0)
    print(f"validation accuracy {accuracy:.4f}; trained parameters: {', '.join(result.parameters)}")
    return 0 if result.succeeded and accuracy >= 0.90 else 1


if __name__ == "__main__":
    sys.exit(main())
