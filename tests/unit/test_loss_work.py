"""The work a call's losses build beyond their inputs (``LossSpec.work``, ``check_work``): a similarity matrix,
an alignment lattice, a broadcast, counted from the shapes before any loss runs and refused past
``MAX_LOSS_WORK`` elements (RESOURCE_EXHAUSTED naming the input). Found by an audit (2026-12-06): 16 KB of
[4000, 1] embeddings made nt_xent_loss build 800 MB in 2 s of CPU; 128 KB would have asked for 13 GB."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

from lossd._wire import FieldError, TensorLimits
from lossd.client import build_request
from lossd.server.evaluation import _evaluate
from lossd.server.evaluation import _binding
from lossd.server.evaluation._binding import bind_params, loss_work
from lossd.server.losses import MAX_LOSS_WORK, REGISTRY
from lossd.server.rpc import handle_evaluate_bytes
from lossd.server.rpc._plan import Plan, Plans
from lossd.v1 import lossd_pb2


#: The rule at the server's default limit (--max-loss-work).
check_work = functools.partial(_binding.check_work, limit=MAX_LOSS_WORK)


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
# The losses an audit (2026-12-06) found building or computing far more than their few-KB requests: (loss, inputs
# and params at the limit, the same just over it, the field named).
_VOLUME = {"input": meta(1, 2, 64, 64, 64), "target": meta(1, 2, 64, 64, 64)}
_CLASSES = lambda n, c: {"input": meta(n, c, 1), "target": meta(n, 1, dtype=torch.int64)}  # noqa: E731
AUDITED = [
    # 4 · N · Π fft_signal_size: a 2^24-point FFT of a 1 × 1 × 4 input fits (125 bytes asked 299 MB), one more not
    ("jukebox_loss", {"input": meta(1, 1, 4), "target": meta(1, 1, 4)}, {"fft_signal_size": [1, 2**24]},
     {"input": meta(1, 1, 4), "target": meta(1, 1, 4)}, {"fft_signal_size": [1, 2**24 + 1]}, "params.fft_signal_size"),
    # 32 · (iter_ + 1) · N · C · pixels: MONAI's default 3 iterations on a 1 × 2 × 64³ volume fit, 4 do not
    ("soft_cldice_loss", _VOLUME, {"iter_": 3}, _VOLUME, {"iter_": 4}, "inputs.input"),
    ("soft_dice_cldice_loss", _VOLUME, {"iter_": 3}, _VOLUME, {"iter_": 4}, "inputs.input"),
    # the background left out is not skeletonized: one channel of 64³ fits 7 iterations
    ("soft_cldice_loss", _VOLUME, {"iter_": 7, "include_background": False}, _VOLUME,
     {"iter_": 8, "include_background": False}, "inputs.input"),
    # a pass per class (and image, per_image true), 8192 elements' work each: 8,192 passes fit
    ("lovasz_softmax_loss", _CLASSES(1, 8192), {}, _CLASSES(1, 8193), {}, "inputs.input"),
    ("lovasz_softmax_loss", _CLASSES(64, 128), {"per_image": True}, _CLASSES(65, 128), {"per_image": True},
     "inputs.input"),
]


@pytest.mark.parametrize(("loss", "fits", "fits_params", "over", "over_params", "field"), AUDITED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(AUDITED)])
def test_the_audited_losses_count_their_work(loss: str, fits: dict[str, Any], fits_params: dict[str, Any],
                                             over: dict[str, Any], over_params: dict[str, Any], field: str) -> None:
    spec = REGISTRY.get(loss)
    assert check_work(spec, fits, bind_params(spec, fits_params)) == MAX_LOSS_WORK
    _refused(loss, over, field, params=bind_params(spec, over_params))



@pytest.mark.parametrize(("loss", "fits", "over", "field"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_a_loss_builds_up_to_the_limit_and_is_refused_past_it(loss: str, fits: dict[str, Any], over: dict[str, Any],
                                                               field: str) -> None:
    assert check_work(REGISTRY.get(loss), fits, {}) == MAX_LOSS_WORK or loss in ("info_nce_loss", "ctc_loss")
    assert 0 < check_work(REGISTRY.get(loss), fits, {}) <= MAX_LOSS_WORK
    _refused(loss, over, field)


def test_a_jukebox_fft_of_the_inputs_own_size_counts_nothing_sent_or_not() -> None:
    """Spectra no larger than a sample are bounded with the input: an fft_signal_size equal to a large input's own
    shape was refused (16 × 2 × 600,000, 14 s of stereo audio) where the same FFT without it was not (review)."""
    spec, audio = REGISTRY.get("jukebox_loss"), meta(16, 2, 600_000)
    for sizes in (None, [2, 600_000], [2, 300_000]):
        assert loss_work(spec, {"input": audio, "target": audio}, bind_params(spec, {"fft_signal_size": sizes}))[0] \
            == 0
    padded = bind_params(spec, {"fft_signal_size": [2, 600_001]})  # one point of padding: the spectra count
    assert loss_work(spec, {"input": audio, "target": audio}, padded)[0] == 4 * 16 * 2 * 600_001
    _refused("jukebox_loss", {"input": audio, "target": audio}, "params.fft_signal_size", params=padded)


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


_h = np.float16
# The audit's requests (2026-12-06), each a few KB, and what answered them: (loss, inputs, params, code, field).
AUDIT_REQUESTS = [
    ("jukebox_loss", {"input": np.zeros((1, 1, 4), _h), "target": np.zeros((1, 1, 4), _h)},
     {"fft_signal_size": [1, 2**25]}, "RESOURCE_EXHAUSTED", "params.fft_signal_size"),
    ("soft_cldice_loss", {"input": np.zeros((1, 1, 16, 16, 96), _h), "target": np.zeros((1, 1, 16, 16, 96), _h)},
     {"iter_": 100}, "RESOURCE_EXHAUSTED", "inputs.input"),  # 98 KB asked 586 MB
    ("lovasz_softmax_loss", {"input": np.zeros((1, 16384, 1), _h), "target": np.zeros((1, 1), np.int16)},
     {"classes": "all"}, "RESOURCE_EXHAUSTED", "inputs.input"),  # 33 KB took 3 s
    ("ssim_loss", {"input": np.zeros((1, 1, 256, 256), _h), "target": np.zeros((1, 1, 256, 256), _h)},
     {"window_size": 511}, "INVALID_ARGUMENT", "params.window_size"),  # 262 KB took 6 s
    ("ms_ssim_l1_loss", {"input": np.zeros((1, 3, 128, 128), _h), "target": np.zeros((1, 3, 128, 128), _h)},
     {"sigmas": [64.0] * 16}, "INVALID_ARGUMENT", "params.sigmas"),  # 393 KB took 5 s
]


@pytest.mark.parametrize(("loss", "inputs", "params", "code", "field"), AUDIT_REQUESTS,
                         ids=[c[0] for c in AUDIT_REQUESTS])
def test_the_audits_requests_are_refused_before_their_loss_runs(monkeypatch: pytest.MonkeyPatch, loss: str,
                                                                 inputs: dict[str, Any], params: dict[str, Any],
                                                                 code: str, field: str) -> None:
    """The work rule answers before the loss is called; a param rule of the loss's before it filters anything."""
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the loss ran")

    if code == "RESOURCE_EXHAUSTED":
        monkeypatch.setattr(_evaluate, "call_loss", never)
    else:
        monkeypatch.setattr(torch.nn.functional, "conv2d", never)
    with pytest.raises(FieldError) as info:
        handle_evaluate_bytes(REGISTRY, build_request(loss, inputs=inputs, params=params)[0])
    assert (info.value.field, info.value.code) == (field, code), info.value


def test_the_window_and_scale_rules_keep_the_published_settings() -> None:
    """ssim_loss's window_size at most 65 (the default is 11); ms_ssim_l1_loss's scales × window width at most 325
    (kornia's default sigmas, 5 windows of 33, are 165), each refused past it naming the param."""
    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    for window in (11, 65):
        handle_evaluate_bytes(REGISTRY, build_request("ssim_loss", x.numpy(), x.numpy(), window_size=window)[0])
    with pytest.raises(FieldError, match=r"must be in \[1, 65\]") as info:
        handle_evaluate_bytes(REGISTRY, build_request("ssim_loss", x.numpy(), x.numpy(), window_size=67)[0])
    assert (info.value.field, info.value.code) == ("params.window_size", "INVALID_ARGUMENT")
    for sigmas in ([0.5, 1.0, 2.0, 4.0, 8.0], [1.0] * 4 + [16.0], [1.0] * 15 + [4.75]):
        handle_evaluate_bytes(REGISTRY, build_request("ms_ssim_l1_loss", x.numpy(), x.numpy(), sigmas=sigmas)[0])
    for sigmas in ([1.0] * 5 + [16.0], [5.0] * 16):  # 6 × 65 = 390, 16 × 21 = 336
        with pytest.raises(FieldError, match=r"taps a pixel; at most 325 \(scales × width\)") as info:
            handle_evaluate_bytes(REGISTRY, build_request("ms_ssim_l1_loss", x.numpy(), x.numpy(), sigmas=sigmas)[0])
        assert (info.value.field, info.value.code) == ("params.sigmas", "INVALID_ARGUMENT")


def test_an_objectives_audited_terms_count_together() -> None:
    """A loss's own count adds into an objective's total: two jukebox terms of 2^23-point FFTs fit (2^25 each), a
    third does not; nor does a lovasz term after them, though each alone would."""
    x = np.zeros((1, 1, 4), np.float16)
    request = lossd_pb2.EvaluateLossRequest()
    for name in ("input", "target"):
        request.inputs[name].CopyFrom(build_request("jukebox_loss", inputs={name: x})[0].inputs[name])
    for k in range(2):
        request.terms.add(loss="jukebox_loss", name=f"j{k}").params.update({"fft_signal_size": [1, 2**23]})
    handle_evaluate_bytes(REGISTRY, request)
    request.terms.add(loss="jukebox_loss", name="j2").params.update({"fft_signal_size": [1, 2**23]})
    with pytest.raises(FieldError) as info:
        handle_evaluate_bytes(REGISTRY, request)
    assert (info.value.field, info.value.code) == ("terms[2].params.fft_signal_size", "RESOURCE_EXHAUSTED"), info.value


def test_the_limit_is_the_callers_and_a_kept_plan_does_not_pass_a_lower_one() -> None:
    """``--max-loss-work`` reaches the rule as ``TensorLimits.max_loss_work``: 33 rows of nt_xent_loss build
    66² = 4356 elements, over a limit of 4096 and under 4356. A plan kept under the higher limit (the same
    signature, the same service's plans) is not taken under the lower one: the request is bound again and
    refused."""
    x = np.zeros((33, 4), np.float32)
    req = build_request("nt_xent_loss", x, x)[0]
    plans: Plans[Plan] = Plans()
    handle_evaluate_bytes(REGISTRY, req, limits=TensorLimits(max_loss_work=4356), plans=plans)
    assert len(plans) == 1 and handle_evaluate_bytes(REGISTRY, req, limits=TensorLimits(max_loss_work=4356),
                                                     plans=plans)
    with pytest.raises(FieldError) as info:
        handle_evaluate_bytes(REGISTRY, req, limits=TensorLimits(max_loss_work=4355), plans=plans)
    assert (info.value.field, info.value.code) == ("inputs.input", "RESOURCE_EXHAUSTED"), info.value
    assert "4356 elements" in info.value.message and "at most 4355 elements beyond its inputs (--max-loss-work, env " \
        "LOSSD_MAX_LOSS_WORK)" in info.value.message
