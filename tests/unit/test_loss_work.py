"""The work a call's losses build beyond their inputs (``LossSpec.work``, ``check_work``): a similarity matrix,
an alignment lattice, a broadcast, counted from the shapes before any loss runs and refused past
``MAX_LOSS_WORK`` elements (RESOURCE_EXHAUSTED naming the input). Found by an audit (2026-12-06): 16 KB of
[4000, 1] embeddings made nt_xent_loss build 800 MB in 2 s of CPU; 128 KB would have asked for 13 GB."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lossd._wire import FieldError
from lossd.client import build_request
from lossd.server.evaluation import _evaluate
from lossd.server.evaluation._binding import bind_params, check_work, loss_work
from lossd.server.losses import MAX_LOSS_WORK, REGISTRY
from lossd.server.rpc import handle_evaluate_bytes
from lossd.v1 import lossd_pb2


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def _refused(loss: str, bound: dict[str, Any], field: str, before: int = 0,
             params: dict[str, Any] | None = None) -> FieldError:
    with pytest.raises(FieldError) as info:
        check_work(REGISTRY.get(loss), bound, params or {}, before)
    assert (info.value.field, info.value.code) == (field, "RESOURCE_EXHAUSTED"), info.value
    assert f"at most {MAX_LOSS_WORK} elements beyond its inputs" in info.value.message
    return info.value


# (loss, inputs at the limit, the same just over it, the input named): each loss's own count of what it builds.
CASES = [
    ("nt_xent_loss", {"input": meta(4096, 1), "target": meta(4096, 1)},
     {"input": meta(4097, 1), "target": meta(4097, 1)}, "inputs.input"),  # (2N)²: SimCLR's 4096 pairs fit
    ("barlow_twins_loss", {"input": meta(2, 8192), "target": meta(2, 8192)},
     {"input": meta(2, 8193), "target": meta(2, 8193)}, "inputs.input"),  # D²: Barlow Twins' 8192 features fit
    ("info_nce_loss", {"query": meta(8192, 1), "positive_key": meta(8192, 1)},
     {"query": meta(8193, 1), "positive_key": meta(8193, 1)}, "inputs.query"),  # N² in-batch logits
    ("info_nce_loss", {"query": meta(1024, 1), "positive_key": meta(1024, 1), "negative_keys": meta(65535, 1)},
     {"query": meta(1025, 1), "positive_key": meta(1025, 1), "negative_keys": meta(65535, 1)}, "inputs.query"),
    ("linear_cross_entropy", {"input": meta(4096, 1), "linear_weight": meta(16384, 1),
                              "target": meta(4096, dtype=torch.int64)},
     {"input": meta(4097, 1), "linear_weight": meta(16384, 1), "target": meta(4097, dtype=torch.int64)},
     "inputs.linear_weight"),
    ("ctc_loss", {"log_probs": meta(4096, 1, 2), "targets": meta(1, 8191, dtype=torch.int64)},
     {"log_probs": meta(4097, 1, 2), "targets": meta(1, 8191, dtype=torch.int64)}, "inputs.targets"),
    ("mse_loss", {"input": meta(1, 8192), "target": meta(8192, 1)},
     {"input": meta(1, 8193), "target": meta(8192, 1)}, "inputs"),  # a broadcast
]


@pytest.mark.parametrize(("loss", "fits", "over", "field"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_a_loss_builds_up_to_the_limit_and_is_refused_past_it(loss: str, fits: dict[str, Any], over: dict[str, Any],
                                                               field: str) -> None:
    assert check_work(REGISTRY.get(loss), fits, {}) == MAX_LOSS_WORK or loss in ("info_nce_loss", "ctc_loss")
    assert 0 < check_work(REGISTRY.get(loss), fits, {}) <= MAX_LOSS_WORK
    _refused(loss, over, field)


def test_the_counts_are_the_tensors_the_losses_build() -> None:
    """Each count is the size of the tensor the loss really builds (torch's, on small inputs)."""
    x = torch.randn(6, 3)
    assert loss_work(REGISTRY.get("nt_xent_loss"), {"input": x, "target": x}, {})[0] == \
        (torch.cat([x, x]) @ torch.cat([x, x]).T).numel()
    assert loss_work(REGISTRY.get("barlow_twins_loss"), {"input": torch.randn(2, 9), "target": torch.randn(2, 9)},
                     {})[0] == 81
    log_probs, targets = torch.randn(50, 2, 3).log_softmax(2), torch.ones(2, 7, dtype=torch.int64)
    ctc = REGISTRY.get("ctc_loss")
    assert loss_work(ctc, {"log_probs": log_probs, "targets": targets, "target_lengths": torch.tensor([3, 4])},
                     {})[0] == 50 * 2 * 9
    assert loss_work(ctc, {"log_probs": log_probs, "targets": targets}, {})[0] == 50 * 2 * 15
    # lengths past the padded targets: the loss's own refusal says so, not the count (the review)
    assert loss_work(ctc, {"log_probs": log_probs, "targets": targets, "target_lengths": [3, 10**8]},
                     {})[0] == 50 * 2 * 15
    # linear_cross_entropy: torch's chunked path builds a chunk of rows of logits at a time, its reference path
    # (no options, label smoothing, probabilities, a chunk of the whole batch) every row's
    lce_spec = REGISTRY.get("linear_cross_entropy")
    lce = {"input": meta(4200, 16), "linear_weight": meta(16384, 16), "target": meta(4200, dtype=torch.int64)}
    lce_work = lambda **params: loss_work(lce_spec, lce, bind_params(lce_spec, params))[0]  # noqa: E731
    assert lce_work(options={"batch_chunk_size": 512}) == 512 * 16384
    assert lce_work(options={}) == 0  # torch sizes its chunks: 4 rows for 16 features, less than linear_weight
    assert lce_work() == lce_work(options={"chunking_method": None}) == 4200 * 16384
    assert lce_work(options={"batch_chunk_size": 512}, label_smoothing=0.1) == 4200 * 16384
    _refused("linear_cross_entropy", lce, "inputs.linear_weight", params=bind_params(lce_spec, {}))
    # nacl_loss pads the one-hot target by the window on every side
    nacl = REGISTRY.get("nacl_loss")
    assert loss_work(nacl, {"input": meta(1, 1024, 1, 1, 1), "target": meta(1, 1, 1, 1, dtype=torch.int64)},
                     bind_params(nacl, {"kernel_size": 31}))[0] == 1024 * 31 ** 3
    # adaptive_log_softmax_with_loss: the head's logits, and the largest tail's
    alsm = {"input": meta(16384, 4), "head.weight": meta(16001, 4), "tail.0.1.weight": meta(50, 2)}
    assert loss_work(REGISTRY.get("adaptive_log_softmax_with_loss"), alsm, {})[0] == 16384 * (16001 + 50)


def test_what_is_no_larger_than_the_inputs_is_never_refused() -> None:
    """However large the inputs the server's limits let through, a loss that builds nothing larger counts 0:
    class indices broadcast with nothing, and shapes that do not broadcast are not combined elementwise."""
    big = meta(10**9)
    assert check_work(REGISTRY.get("mse_loss"), {"input": big, "target": big}, {}) == 0
    assert check_work(REGISTRY.get("cross_entropy"), {"input": meta(100_000, 1),
                                                      "target": meta(100_000, dtype=torch.int64)}, {}) == 0
    assert check_work(REGISTRY.get("nt_xent_loss"), {"input": meta(3, 10**8), "target": meta(3, 10**8)}, {}) == 0
    assert check_work(REGISTRY.get("info_nce_loss"), {"query": meta(10, 4), "positive_key": meta(10, 4),
                                                      "negative_keys": meta(10, 10**6, 4)}, {}) == 0  # paired


# Shapes that would broadcast beyond every input, for losses that do not broadcast them (the review of the rule:
# each was refused while torch computes it in O(N)).
NOT_BROADCAST = [
    ("info_nce_loss", {"query": meta(1024, 128), "positive_key": meta(1024, 128),
                       "negative_keys": meta(1024, 1, 128)}, {"negative_mode": "paired"}),  # one hard negative each
    ("gaussian_nll_loss", {"input": meta(10000, 1), "target": meta(10000, 1), "var": meta(10000)}, {}),
    ("cosine_embedding_loss", {"input1": meta(10000, 1), "input2": meta(10000, 1), "target": meta(10000)}, {}),
    ("cross_entropy", {"input": meta(100, 1000, 1), "target": meta(100, 1, dtype=torch.int64),
                       "weight": meta(1000)}, {}),
    ("nll_loss", {"input": meta(100, 1000, 1), "target": meta(100, 1, dtype=torch.int64), "weight": meta(1000)}, {}),
]


@pytest.mark.parametrize(("loss", "bound", "params"), NOT_BROADCAST, ids=[c[0] for c in NOT_BROADCAST])
def test_only_the_inputs_a_loss_broadcasts_count_as_broadcast(loss: str, bound: dict[str, Any],
                                                              params: dict[str, Any]) -> None:
    assert check_work(REGISTRY.get(loss), bound, params) == 0


def test_a_broadcast_counts_whatever_the_dtypes_sent() -> None:
    """An int8 target of mse_loss broadcasts as a float one does (it was left out: 24 KB took 650 MB); so do
    multilabel_soft_margin_loss's input and target (32 KB took 236 MB)."""
    _refused("mse_loss", {"input": meta(1, 8200, dtype=torch.float16), "target": meta(8200, 1, dtype=torch.int8)},
             "inputs")
    _refused("multilabel_soft_margin_loss", {"input": meta(9000, 1), "target": meta(1, 9000)}, "inputs")


def test_an_objectives_terms_count_together() -> None:
    x = meta(3000, 1)
    built = check_work(REGISTRY.get("nt_xent_loss"), {"input": x, "target": x}, {})
    assert built == 6000 ** 2 < MAX_LOSS_WORK < 2 * built
    message = _refused("nt_xent_loss", {"input": x, "target": x}, "inputs.input", before=built).message
    assert f"in all (the objective's terms before this one: {built})" in message
    t = lambda n: {"input": np.zeros((n, 1), np.float16), "target": np.zeros((n, 1), np.float16)}  # noqa: E731
    shared = lossd_pb2.EvaluateLossRequest()  # two terms on the same inputs: each fits, together they do not
    for name, value in t(3000).items():
        shared.inputs[name].CopyFrom(build_request("nt_xent_loss", inputs={name: value})[0].inputs[name])
    shared.terms.add(loss="nt_xent_loss", name="a")
    shared.terms.add(loss="nt_xent_loss", name="b")
    with pytest.raises(FieldError) as info:
        handle_evaluate_bytes(REGISTRY, shared)
    assert (info.value.field, info.value.code) == ("terms[1].inputs.input", "RESOURCE_EXHAUSTED"), info.value


def test_a_request_over_the_limit_is_refused_before_its_loss_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("the loss ran")

    monkeypatch.setattr(_evaluate, "call_loss", never)
    x = np.zeros((6000, 1), np.float16)  # 24 KB of embeddings: a (2 · 6000)² matrix
    with pytest.raises(FieldError) as info:
        handle_evaluate_bytes(REGISTRY, build_request("nt_xent_loss", x, x)[0])
    assert (info.value.field, info.value.code) == ("inputs.input", "RESOURCE_EXHAUSTED"), info.value
    assert "the (2N)² similarity matrix, 144000000 elements, from inputs input [6000, 1], target [6000, 1]" in \
        info.value.message


def test_the_histogram_losses_count_their_joint_histograms() -> None:
    """mutual_information_loss bounded signals × samples × bins, but its joint histograms are signals × bins²:
    232 bytes asked 400 MB (the review). global_mutual_information_loss likewise (N × bins²)."""
    x = torch.rand(16384, 1)
    with pytest.raises(FieldError, match=r"16384 signals of 1 samples × 64 bins take 67108864 kernel evaluations "
                                         r"and histogram cells"):
        REGISTRY.get("mutual_information_loss").fn(x, x, signal_dims=1, kernel="gaussian", num_bins=64,
                                                   window_radius=1.0, reduction="none")
    with pytest.raises(FieldError, match=r"take 67108864 weights and cells"):
        handle_evaluate_bytes(REGISTRY, build_request("global_mutual_information_loss", x.numpy(), x.numpy(),
                                                      num_bins=64)[0])


@pytest.mark.parametrize("shape", [(2, 37, 53), (1, 5, 7, 9), (1, 1, 300), (3, 16, 16)])
def test_the_distance_transform_in_pieces_is_the_transform_in_one(shape: tuple[int, ...],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """hausdorff_dt_loss and boundary_loss built a side² cost matrix and as large a piece at once: 567 MB from a
    30 KB request with a side of 6,000 (an audit, 2026-12-06). Pieces of at most _CHUNK elements now, cut along the
    output index too: the same distances, bit for bit, whatever the piece size."""
    from lossd.server.losses import _image

    torch.manual_seed(len(shape))
    amin, pieces = torch.Tensor.amin, []

    def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        pieces.append(self.numel())
        return amin(self, *args, **kwargs)

    for p in (0.0, 0.02, 0.5, 1.0):
        mask = torch.rand(shape) < p
        whole = _image._squared_distance_to(mask)
        monkeypatch.setattr(_image, "_CHUNK", 7)  # a few output indices a piece: every side is cut
        monkeypatch.setattr(torch.Tensor, "amin", counted)
        assert torch.equal(_image._squared_distance_to(mask), whole), p
        monkeypatch.undo()
        assert max(pieces) <= max(shape), pieces  # one output index of one row a piece, never a side² matrix
        pieces.clear()
