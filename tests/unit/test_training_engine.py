"""The training loop, in this process: equal to a plain torch loop, deterministic, resumable bit for
bit from any step, and honest about NaN, cancel, schedules, optimizers and param groups."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lossd.server.losses import REGISTRY
from lossd.server.training import Control, build_model, plan_job, run_job
from lossd.server.training._engine import epoch_seed, spec_digest, stopped_event
from lossd.v1 import training_pb2 as pb
from support.training import request, small_spec

STATE, STEP, EPOCH, WARNING = (pb.JOB_EVENT_KIND_STATE, pb.JOB_EVENT_KIND_STEP, pb.JOB_EVENT_KIND_EPOCH,
                               pb.JOB_EVENT_KIND_WARNING)


def train(spec: dict[str, Any], checkpoint: Path | None = None, control: Control | None = None,
          on_event: Any = None) -> list[pb.JobEvent]:
    events: list[pb.JobEvent] = []

    def emit(e: pb.JobEvent) -> None:
        events.append(e)
        if on_event is not None:
            on_event(e)

    req = request(spec)
    torch.set_num_threads(1)  # as in the worker
    run_job(plan_job(req, REGISTRY), checkpoint, emit, control or Control(), spec_digest(req.SerializeToString()))
    return events


def params(event: pb.JobEvent) -> dict[str, bytes]:
    assert event.parameters, pb.JobState.Name(event.state)
    return {k: v.raw for k, v in event.parameters.items()}


def as_tensors(event: pb.JobEvent) -> dict[str, torch.Tensor]:
    return {k: torch.frombuffer(bytearray(v.raw), dtype=torch.float32).reshape(list(v.shape))
            for k, v in event.parameters.items()}


# A job that exercises what resume must restore: dropout (RNG), momentum (optimizer state), a
# schedule (scheduler state), L1/L2, validation metrics.
RICH = small_spec(
    model={"mlp": {"hidden": [8, 8], "activation": "tanh", "dropout": 0.2}},
    loss={"name": "cross_entropy", "params": {"label_smoothing": 0.05}},
    optimizer={"name": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True,
               "param_groups": [{"patterns": ["*.bias"], "lr": 0.05}]},
    schedule={"step": {"step_size": 1, "gamma": 0.7}},
    regularization={"l1": 0.0005, "l2": 0.001},
    epochs=4, batch_size=32, step_events_per_second=0,
)


def test_a_job_equals_a_plain_torch_loop_bit_for_bit() -> None:
    spec = small_spec(model={"mlp": {"hidden": [4, 8], "output_activation": "sigmoid"}},
                      regularization={"l1": 0.001, "l2": 0.001}, epochs=3, step_events_per_second=0)
    final = train(spec)[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED

    # The reference: written from the documented rules, not from the engine.
    from lossd.server.training import make_builtin
    data = make_builtin("rings", {"n_positive": 100, "n_negative": 300}, default_seed=3)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(3))
    train_idx = perm[100:]  # validation_fraction 0.25: the first 100 of the permutation
    x, y = data.x[train_idx], data.labels[train_idx].float().unsqueeze(1)
    torch.manual_seed(3)
    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(2, 4))
    model.add_module("act1", torch.nn.ReLU())
    model.add_module("fc2", torch.nn.Linear(4, 8))
    model.add_module("act2", torch.nn.ReLU())
    model.add_module("out", torch.nn.Linear(8, 1))
    model.add_module("out_act", torch.nn.Sigmoid())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    focal = REGISTRY.get("binary_focal_loss").fn
    weights = [model.fc1.weight, model.fc2.weight, model.out.weight]
    for epoch in range(3):
        order = torch.randperm(300, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        for b in range(0, 300, 50):
            i = order[b:b + 50]
            loss = focal(model(x[i]), y[i], gamma=2.0, alpha=0.75, reduction="mean")
            flat = torch.cat([w.reshape(-1) for w in weights])
            loss = loss + 0.001 * flat.abs().sum() + 0.5 * 0.001 * flat.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    got = as_tensors(final)
    for name, p in model.state_dict().items():
        assert torch.equal(got[name], p), name


def test_same_spec_and_seed_give_identical_parameters_and_another_seed_does_not() -> None:
    a, b = train(RICH)[-1], train(RICH)[-1]
    assert params(a) == params(b)
    assert params(train({**RICH, "seed": 4})[-1]) != params(a)


@pytest.mark.parametrize("stop_at", [("step", 3), ("step", 17), ("epoch", 1), ("epoch", 3)])
def test_interrupt_and_resume_give_identical_parameters(tmp_path: Path, stop_at: tuple[str, int]) -> None:
    reference = train(RICH)
    control = Control()
    kind, n = stop_at
    steps_seen: list[int] = []

    def on_event(e: pb.JobEvent) -> None:
        if e.kind == EPOCH and kind == "epoch" and e.epoch == n:
            control.interrupt.set()
        if e.kind in (EPOCH, STEP):
            steps_seen.append(e.step)

    # step events at every step, so that "step" n interrupts mid-epoch
    spec = {**RICH, "step_events_per_second": 1e9}
    reference_fast = train(spec)
    assert params(reference_fast[-1]) == params(reference[-1])  # throttling does not change the run
    ckpt = tmp_path / "job.pt"
    first = train(spec, ckpt, control, on_event=lambda e: (on_event(e), kind == "step" and e.step == n
                                                           and control.interrupt.set()))
    assert first[-1].state == pb.JOB_STATE_INTERRUPTED and ckpt.exists()
    resumed = train(spec, ckpt)
    assert resumed[0].state == pb.JOB_STATE_RUNNING and resumed[0].message.startswith("resumed"), resumed[0].message
    assert resumed[-1].state == pb.JOB_STATE_SUCCEEDED
    assert params(resumed[-1]) == params(reference[-1])
    assert [h.SerializeToString() for h in resumed[-1].history] == [
        h.SerializeToString() for h in reference[-1].history]
    assert resumed[-1].loss == reference[-1].loss and dict(resumed[-1].metrics) == dict(reference[-1].metrics)


def test_resume_from_an_epoch_checkpoint_after_a_crash(tmp_path: Path) -> None:
    """What kill -9 leaves: the checkpoint of the last finished epoch, and a run that went further."""
    reference = train(RICH)
    ckpt, saved = tmp_path / "job.pt", tmp_path / "after-epoch-2.pt"

    def keep(e: pb.JobEvent) -> None:
        if e.kind == EPOCH and e.epoch == 2:
            shutil.copy(ckpt, saved)

    train(RICH, ckpt, on_event=keep)
    shutil.copy(saved, ckpt)
    resumed = train(RICH, ckpt)
    assert "step 20" in resumed[0].message and "epoch 3" in resumed[0].message, resumed[0].message
    assert params(resumed[-1]) == params(reference[-1])


def test_resume_from_the_last_epochs_checkpoint_says_only_the_final_event_remains(tmp_path: Path) -> None:
    """The server stopped between the last epoch's checkpoint and the job's end: no epoch is left to train
    (the 2026-12-05 audit: it said 'continuing with epoch 5' for a 4-epoch job)."""
    reference = train(RICH)
    ckpt, saved = tmp_path / "job.pt", tmp_path / "after-the-last-epoch.pt"
    train(RICH, ckpt, on_event=lambda e: e.kind == EPOCH and e.epoch == 4 and shutil.copy(ckpt, saved))
    shutil.copy(saved, ckpt)
    resumed = train(RICH, ckpt)
    assert [(e.kind, e.state) for e in resumed] == [(STATE, pb.JOB_STATE_RUNNING), (STATE, pb.JOB_STATE_SUCCEEDED)]
    assert resumed[0].message == ("resumed from the checkpoint at step 40: all 4 epochs are done; only the final "
                                  "event remains"), resumed[0].message
    assert params(resumed[-1]) == params(reference[-1])
    assert list(resumed[-1].history) == list(reference[-1].history)


@pytest.mark.parametrize("at_step", [7, 10])  # mid-epoch and at an epoch's end
def test_a_job_stopped_at_its_checkpoint_ends_as_the_engine_would_have(tmp_path: Path, at_step: int) -> None:
    """``stopped_event`` (a job cancelled while no worker trains it: it waited to resume, or its worker was
    still planning) gives what the engine's own cancel at that step gives: the parameters so far, bit for
    bit, the position, objective, metrics, learning rates and history."""
    spec = {**RICH, "step_events_per_second": 1e9}
    digest = spec_digest(request(spec).SerializeToString())
    control = Control()
    cancelled = train(spec, control=control, on_event=lambda e: e.step == at_step and control.cancel.set())[-1]
    control, ckpt = Control(), tmp_path / "job.pt"
    train(spec, ckpt, control, on_event=lambda e: e.step == at_step and control.interrupt.set())
    stopped = stopped_event(ckpt, digest, pb.JOB_STATE_CANCELLED, "cancelled at step {step} (epoch {epoch})",
                            epochs=4, total_steps=40)
    assert stopped is not None and cancelled.state == stopped.state == pb.JOB_STATE_CANCELLED
    assert params(stopped) == params(cancelled)
    assert stopped.message == f"cancelled at step {at_step} (epoch {cancelled.epoch})"
    for name in ("epoch", "epochs", "step", "total_steps", "loss", "lr", "eta_s"):
        assert getattr(stopped, name) == getattr(cancelled, name), name
    assert (dict(stopped.loss_parts), dict(stopped.lrs), dict(stopped.metrics)) == (
        dict(cancelled.loss_parts), dict(cancelled.lrs), dict(cancelled.metrics))
    assert list(stopped.history) == list(cancelled.history) and len(stopped.history) == at_step // 10
    # No checkpoint, one of another spec, or a damaged one: the job never trained as far as anyone can tell.
    assert stopped_event(tmp_path / "none.pt", digest, pb.JOB_STATE_CANCELLED, "", epochs=4, total_steps=40) is None
    assert stopped_event(ckpt, "another spec", pb.JOB_STATE_CANCELLED, "", epochs=4, total_steps=40) is None
    ckpt.write_bytes(b"damaged")
    assert stopped_event(ckpt, digest, pb.JOB_STATE_CANCELLED, "", epochs=4, total_steps=40) is None


def test_a_damaged_or_foreign_checkpoint_starts_over_with_the_same_result(tmp_path: Path) -> None:
    reference = train(RICH)
    ckpt = tmp_path / "job.pt"
    ckpt.write_bytes(b"not a checkpoint")
    damaged = train(RICH, ckpt)
    assert damaged[0].message.startswith("started over") and params(damaged[-1]) == params(reference[-1])
    other = tmp_path / "other.pt"
    train({**RICH, "epochs": 1}, other)  # a checkpoint of another spec
    foreign = train(RICH, other)
    assert "another spec" in foreign[0].message and params(foreign[-1]) == params(reference[-1])


def test_a_diverging_job_fails_with_the_step() -> None:
    spec = small_spec(data={"builtin": {"name": "linear_regression", "params": {"n_samples": 200}}},
                      model={"linear": {}}, loss={"name": "mse"}, optimizer={"name": "sgd", "lr": 1000.0},
                      metrics=["mae"], epochs=50, step_events_per_second=0)
    events = train(spec)
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED and not final.parameters
    import re
    m = re.fullmatch(r"loss became (NaN|infinite) at step (\d+) \(epoch (\d+)\)", final.message)
    assert m, final.message
    assert int(m.group(2)) == final.step + 1  # the step that produced it; `step` counts finished steps


def test_cancel_stops_before_the_next_step_with_the_parameters_so_far() -> None:
    control = Control()
    seen: list[int] = []

    def on_event(e: pb.JobEvent) -> None:
        if e.kind == STEP:
            seen.append(e.step)
            control.cancel.set()

    events = train({**RICH, "step_events_per_second": 1e9, "epochs": 50}, control=control, on_event=on_event)
    final = events[-1]
    assert final.state == pb.JOB_STATE_CANCELLED and final.step == seen[0]  # not one step more
    assert final.parameters and "cancelled after step" in final.message


def test_events_report_progress() -> None:
    events = train({**RICH, "step_events_per_second": 1e9})
    kinds = [e.kind for e in events]
    assert kinds[0] == STATE and events[0].state == pb.JOB_STATE_RUNNING and events[0].message == "started"
    assert kinds.count(EPOCH) == 4 and kinds[-1] == STATE
    steps = [e.step for e in events if e.kind in (STEP, EPOCH)]
    assert steps == list(range(1, 4 * 10 + 1))  # 300 samples / 32: 10 steps per epoch
    for e in events:
        assert e.epochs == 4 and e.total_steps == 40 and e.time.seconds > 0
        if e.kind in (STEP, EPOCH):
            assert e.samples_per_second > 0 and e.eta_s >= 0 and e.elapsed_s > 0 and e.lr > 0
            assert set(e.loss_parts) == {"loss", "l1", "l2"}
            assert math.isclose(e.loss, sum(e.loss_parts.values()), rel_tol=1e-6)  # float32 objective
            assert set(e.lrs) == {"default", "param_groups[0]"}
    epoch_events = [e for e in events if e.kind == EPOCH]
    assert set(epoch_events[0].metrics) == {"train_accuracy", "val_accuracy", "val_loss"}
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED and final.eta_s == 0
    assert [h.epoch for h in final.history] == [1, 2, 3, 4]
    assert dict(final.metrics) == dict(epoch_events[-1].metrics) == dict(final.history[-1].metrics)
    assert sorted(final.parameters) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "out.bias", "out.weight"]
    assert all(t.raw and not t.values for t in final.parameters.values())


def test_step_events_can_be_switched_off_epoch_events_cannot() -> None:
    kinds = [e.kind for e in train({**RICH, "step_events_per_second": 0})]
    assert STEP not in kinds and kinds.count(EPOCH) == 4


def test_the_schedule_sets_each_epochs_learning_rate() -> None:
    spec = {**RICH, "epochs": 5, "schedule": {"step": {"step_size": 2, "gamma": 0.5}},
            "optimizer": {"name": "sgd", "lr": 0.1}}
    assert [h.lr for h in train(spec)[-1].history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    spec["schedule"] = {"cosine": {"t_max": 4, "eta_min": 0.01}}
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert [h.lr for h in train(spec)[-1].history] == pytest.approx(expected)
    spec["schedule"] = {"exponential": {"gamma": 0.9}}
    assert [h.lr for h in train(spec)[-1].history] == pytest.approx([0.1 * 0.9**e for e in range(5)])


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.1},
    {"name": "adam", "lr": 0.01, "betas": [0.8, 0.99], "amsgrad": True, "eps": 1e-7},
    {"name": "adamw", "lr": 0.01, "weight_decay": 0.05},
    {"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True},
    {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01},
])
def test_every_optimizer_trains(optimizer: dict[str, Any]) -> None:
    events = train({**RICH, "optimizer": optimizer, "epochs": 3})
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
    assert final.history[-1].loss < final.history[0].loss


def test_warning_event_when_l2_and_weight_decay_stack() -> None:
    spec = {**RICH, "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.01}}
    events = train(spec)
    assert events[1].kind == WARNING and "stack" in events[1].message
    assert sum(e.kind == WARNING for e in events) == 1


def _sgd_pair(weight_decay_groups: bool) -> dict[str, Any]:
    spec = small_spec(model={"mlp": {"hidden": [6], "activation": "tanh"}}, loss={"name": "cross_entropy"},
                      epochs=3, step_events_per_second=0)
    if weight_decay_groups:  # decay on the weights, through the optimizer
        spec["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                             "param_groups": [{"patterns": ["*.weight"], "weight_decay": 0.01}]}
    else:  # no decay; an L2 term 0.5 * 0.01 * sum(theta^2) on the weights instead
        spec["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
        spec["regularization"] = {"l2": 0.01}
    return spec


def test_weight_decay_on_weights_equals_an_l2_term_on_the_weights() -> None:
    a = as_tensors(train(_sgd_pair(True))[-1])
    b = as_tensors(train(_sgd_pair(False))[-1])
    assert a.keys() == {"fc1.weight", "fc1.bias", "out.weight", "out.bias"} == b.keys()
    # The same parameters up to float32 rounding: SGD adds grad + wd * theta in one fused operation, autograd
    # adds the L2 gradient (the same wd * theta) to the loss gradient separately; a last bit may differ.
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_models_and_activations() -> None:
    from lossd._model import ACTIVATIONS, ModelPlan
    for act in ACTIVATIONS:
        m = build_model(ModelPlan("mlp", (3,), act, "softmax", 0.5), 2, 4)
        assert [n for n, _ in m.named_children()] == ["fc1", "act1", "drop1", "out", "out_act"]
        out = m.eval()(torch.randn(5, 2))
        torch.testing.assert_close(out.sum(dim=1), torch.ones(5))
    lin = build_model(ModelPlan("linear", output_activation="log_softmax"), 3, 2)
    assert [n for n, _ in lin.named_parameters()] == ["out.weight", "out.bias"]
    assert torch.allclose(lin(torch.randn(4, 3)).exp().sum(dim=1), torch.ones(4))
    x = torch.randn(4, 3)
    torch.testing.assert_close(lin(x), F.log_softmax(lin.out(x), dim=1))


def test_epoch_seed_is_documented() -> None:
    assert epoch_seed(42, 3) == 42 * 1_000_003 + 3


# -- parameters an optimizer step made non-finite (the 2026-12-05 audit: SUCCEEDED with NaN parameters) ------

def _diverging(**overrides: Any) -> dict[str, Any]:
    """A linear regression whose first AdamW step makes every parameter NaN or infinite (weight_decay 1e300
    multiplies them by 1 - lr * 1e300), with a finite loss at that step: one step per epoch."""
    return small_spec(**{"model": {"linear": {}}, "loss": {"name": "mse"}, "metrics": [],
                         "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 200}}},
                         "optimizer": {"name": "adamw", "lr": 0.1, "weight_decay": 1e300},
                         "batch_size": 1000, "step_events_per_second": 0, **overrides})


_NON_FINITE = r"parameters became NaN or infinite by step {} \(epoch {}\): the optimizer's update made them non-finite"


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_step_that_makes_the_parameters_non_finite_fails_the_job_at_its_epochs_end(epochs: int) -> None:
    """The job's last step (epochs 1) left them in the SUCCEEDED event; an epoch's last step (epochs 2) let the
    next epoch's first loss find them a step later. Now the epoch's end fails the job, without parameters and
    before the epoch's event, metrics and checkpoint."""
    import re
    events = train(_diverging(epochs=epochs))
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED and not final.parameters, final.message
    assert re.fullmatch(_NON_FINITE.format(1, 1), final.message), final.message
    assert final.step == 1 and EPOCH not in [e.kind for e in events] and not final.history


def test_no_checkpoint_holds_parameters_that_are_not_finite(tmp_path: Path) -> None:
    """A sigmoid output keeps the loss finite while the parameters grow: AdamW's decay (lr * weight_decay =
    1e20) makes them about 1e19 at step 1 (epoch 1 ends and checkpoints) and overflows them at step 2. The
    checkpoint stays epoch 1's, with finite parameters; the job ends FAILED at epoch 2's end."""
    import re
    ckpt = tmp_path / "job.pt"
    spec = _diverging(model={"linear": {"output_activation": "sigmoid"}}, epochs=2,
                      optimizer={"name": "adamw", "lr": 0.1, "weight_decay": 1e21})
    events = train(spec, ckpt)
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED and not final.parameters, final.message
    assert re.fullmatch(_NON_FINITE.format(2, 2), final.message), final.message
    assert [e.epoch for e in events if e.kind == EPOCH] == [1] and [h.epoch for h in final.history] == [1]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in saved["model"].values())
    assert max(float(t.abs().max()) for t in saved["model"].values()) > 1e18  # huge, not yet infinite


@pytest.mark.parametrize("stop", ["cancel", "interrupt"])
def test_a_cancel_or_interrupt_after_such_a_step_fails_the_job_without_parameters(tmp_path: Path,
                                                                                  stop: str) -> None:
    """Two steps per epoch, stopped after the first (which made the parameters NaN): a cancel handed them
    back as "the parameters so far", an interrupt wrote them to the checkpoint the job resumes from."""
    import re
    control, ckpt = Control(), tmp_path / "job.pt"

    def on_event(e: pb.JobEvent) -> None:
        if e.kind == STEP:
            getattr(control, stop).set()

    events = train(_diverging(batch_size=75, step_events_per_second=1e9), ckpt, control, on_event)
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED and not final.parameters, final.message
    assert re.fullmatch(_NON_FINITE.format(1, 1), final.message), final.message
    assert not ckpt.exists()


def test_a_job_whose_parameters_stay_finite_is_unchanged_by_the_check() -> None:
    """The check reads the parameters, nothing more: a job still equals itself run twice and is not failed."""
    spec = {**RICH, "epochs": 2}
    a, b = train(spec)[-1], train(spec)[-1]
    assert a.state == b.state == pb.JOB_STATE_SUCCEEDED and params(a) == params(b)


# -- settings torch accepts: lr 0 (freezing a group), any dampening, Nesterov with a group without momentum ---

def _linear_regression_loop(epochs: int, make_optimizer: Any) -> tuple[dict[str, torch.Tensor],
                                                                      dict[str, torch.Tensor]]:
    """A plain torch loop, written from the documented rules: an MLP (3 → 4 tanh → 1) on linear_regression
    (200 samples, seed 3), a quarter held out, batches of 50 in each epoch's seeded order, MSE. Returns the
    initial and the final parameters."""
    from lossd.server.training import make_builtin
    data = make_builtin("linear_regression", {"n_samples": 200}, default_seed=3)
    assert data.y is not None
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(3))
    x, y = data.x[perm[50:]], data.y[perm[50:]]
    torch.manual_seed(3)
    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(3, 4))
    model.add_module("act1", torch.nn.Tanh())
    model.add_module("out", torch.nn.Linear(4, 1))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model)
    for epoch in range(epochs):
        order = torch.randperm(150, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        for b in range(0, 150, 50):
            i = order[b:b + 50]
            loss = F.mse_loss(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return initial, dict(model.state_dict())


def _groups(model: torch.nn.Module, *groups: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """torch's groups as lossd builds them: the unmatched parameters first, then each (prefix, settings)."""
    named = dict(model.named_parameters())
    taken = {n for prefix, _ in groups for n in named if n.startswith(prefix)}
    out: list[dict[str, Any]] = [{"params": [t for n, t in named.items() if n not in taken]}]
    out += [{"params": [t for n, t in named.items() if n.startswith(prefix)], **settings} for prefix, settings in groups]
    return out


#: (lossd optimizer, the same torch optimizer, names lr 0 leaves unchanged). Each was refused before
#: (lr > 0, dampening in [0, 1], a group's momentum > 0 with nesterov); torch accepts every one of them.
TORCH_ACCEPTS = {
    "sgd lr 0": ({"name": "sgd", "lr": 0.0, "momentum": 0.9, "weight_decay": 0.01},
                 lambda m: torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9, weight_decay=0.01),
                 ["fc1.weight", "fc1.bias", "out.weight", "out.bias"]),
    "sgd freezes fc1 (group lr 0)": (
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "param_groups": [{"patterns": ["fc1.*"], "lr": 0.0}]},
        lambda m: torch.optim.SGD(_groups(m, ("fc1.", {"lr": 0.0})), lr=0.1, momentum=0.9),
        ["fc1.weight", "fc1.bias"]),
    "adam freezes out (group lr 0)": (
        {"name": "adam", "lr": 0.01, "weight_decay": 0.01, "param_groups": [{"patterns": ["out.*"], "lr": 0}]},
        lambda m: torch.optim.Adam(_groups(m, ("out.", {"lr": 0.0})), lr=0.01, weight_decay=0.01),
        ["out.weight", "out.bias"]),
    "adamw lr 0": ({"name": "adamw", "lr": 0.0}, lambda m: torch.optim.AdamW(m.parameters(), lr=0.0),
                   ["fc1.weight", "fc1.bias", "out.weight", "out.bias"]),
    "sgd dampening -0.5": ({"name": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": -0.5},
                           lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, dampening=-0.5), []),
    "sgd dampening 1.5": ({"name": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 1.5},
                          lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, dampening=1.5), []),
    "sgd nesterov, a group without momentum": (
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
         "param_groups": [{"patterns": ["out.*"], "momentum": 0.0}]},
        lambda m: torch.optim.SGD(_groups(m, ("out.", {"momentum": 0.0})), lr=0.05, momentum=0.9, nesterov=True),
        []),
}


@pytest.mark.parametrize("case", list(TORCH_ACCEPTS))
def test_settings_torch_accepts_train_what_torch_trains_bit_for_bit(case: str) -> None:
    optimizer, make_optimizer, frozen = TORCH_ACCEPTS[case]
    spec = small_spec(model={"mlp": {"hidden": [4], "activation": "tanh"}}, loss={"name": "mse"}, metrics=[],
                      data={"builtin": {"name": "linear_regression", "params": {"n_samples": 200}},
                            "validation_fraction": 0.25},
                      optimizer=optimizer, epochs=3, batch_size=50, step_events_per_second=0)
    final = train(spec)[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
    initial, expected = _linear_regression_loop(3, make_optimizer)
    got = as_tensors(final)
    assert got.keys() == expected.keys() == {"fc1.weight", "fc1.bias", "out.weight", "out.bias"}
    for name in got:
        assert torch.equal(got[name], expected[name]), name
        assert torch.equal(got[name], initial[name]) == (name in frozen), name  # lr 0: left where they were


def test_the_penalties_are_one_flat_sum_as_documented() -> None:
    """docs/training.md said training computes the penalties "exactly as for EvaluateLoss"; it sums one
    flattened torch.cat of the covered tensors, as a plain torch loop writes it, while EvaluateLoss sums
    tensor by tensor (docs/objectives.md): with seed 0 the two l1 values differ in the last bit. The engine's
    numbers stay (resume and the plain-loop tests rely on them); the documents say what it does."""
    from lossd.server.evaluation import Regularization, add_penalties
    spec = small_spec(model={"mlp": {"hidden": [7, 5], "activation": "tanh"}}, loss={"name": "mse"}, metrics=[],
                      data={"builtin": {"name": "linear_regression", "params": {"n_samples": 200}}},
                      regularization={"l1": 0.1, "l2": 0.1}, optimizer={"name": "sgd", "lr": 0.01}, seed=0,
                      epochs=1, batch_size=1000, step_events_per_second=0)
    final = train(spec)[-1]
    (epoch,) = final.history  # one step: the epoch's parts are the first step's, on the initial parameters
    torch.manual_seed(0)
    model = build_model(plan_job(request(spec), REGISTRY).model, 3, 1)
    named = dict(model.named_parameters())
    covered = [named[n].detach() for n in sorted(named) if n.endswith(".weight")]
    flat = torch.cat([t.reshape(-1) for t in covered])
    assert epoch.loss_parts["l1"] == float(0.1 * flat.abs().sum())
    assert epoch.loss_parts["l2"] == float(0.5 * 0.1 * flat.pow(2).sum())
    by_tensor: dict[str, float] = {}
    add_penalties(torch.tensor(0.0), covered, Regularization(l1=0.1, l2=0.1), by_tensor)  # EvaluateLoss's sums
    assert by_tensor["l1"] != epoch.loss_parts["l1"]
    assert by_tensor["l1"] == pytest.approx(epoch.loss_parts["l1"], rel=1e-6)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text(encoding="utf-8")
    assert "exactly as for EvaluateLoss" not in doc
    assert "flattened into one tensor (`torch.cat`) and summed once" in doc and "differ in the last bits" in doc
