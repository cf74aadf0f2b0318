"""The training loop: deterministic, resumable from any step boundary, reporting through events.

Determinism: the model is initialised after ``torch.manual_seed(seed)``; the
train/validation split and each epoch's shuffle come from generators seeded
from the job seed (epoch ``e`` uses ``seed * 1000003 + e``), so they need no
saved state; dropout draws from the global RNG, whose state the checkpoint
keeps. A checkpoint records the position (epoch, step in epoch), the model,
optimizer and scheduler state, the RNG state and the running sums of the
epoch, so a resumed run takes exactly the steps the uninterrupted run would
have taken and ends with the same parameters, bit for bit. The worker runs
torch with one thread (CPU kernels are then deterministic, and concurrent
jobs do not fight over cores).

    >>> from google.protobuf import json_format
    >>> from lossd.v1 import training_pb2
    >>> from lossd.server.losses import REGISTRY
    >>> from lossd.server.training._spec import plan_job
    >>> request = json_format.ParseDict({
    ...     "model": {"linear": {}}, "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 64}}},
    ...     "loss": {"name": "mse"}, "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 3, "batch_size": 16,
    ...     "step_events_per_second": 0}, training_pb2.TrainJobRequest())
    >>> events = []
    >>> run_job(plan_job(request, REGISTRY), None, events.append, Control())
    >>> [training_pb2.JobEventKind.Name(e.kind)[15:] + "/" + training_pb2.JobState.Name(e.state)[10:] for e in events]
    ['STATE/RUNNING', 'EPOCH/RUNNING', 'EPOCH/RUNNING', 'EPOCH/RUNNING', 'STATE/SUCCEEDED']
    >>> sorted(events[-1].parameters), events[-1].step, len(events[-1].history)
    (['out.bias', 'out.weight'], 12, 3)
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...v1 import training_pb2
from .._tensors import encode_tensor
from ..losses import LossError
from ._checkpoint import load_checkpoint, save_checkpoint
from ._metrics import evaluate_split
from ._model import build_model
from ._optim import build_optimizer, build_scheduler
from ._spec import JobPlan

__all__ = ["Control", "run_job", "spec_digest", "epoch_seed"]

State = training_pb2.JobState
Kind = training_pb2.JobEventKind
CHECKPOINT_FORMAT = 1


@dataclass
class Control:
    """Requests from the server to a running job, checked before every step."""

    cancel: threading.Event = field(default_factory=threading.Event)
    interrupt: threading.Event = field(default_factory=threading.Event)


def spec_digest(spec_bytes: bytes) -> str:
    """Identifies the spec a checkpoint belongs to."""
    return hashlib.sha256(spec_bytes).hexdigest()


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s shuffle (0-based epoch).

    >>> epoch_seed(42, 0), epoch_seed(42, 1)
    (42000126, 42000127)
    """
    return (seed * 1_000_003 + epoch) % (2**63)


@dataclass
class _Progress:
    """Where the run is; all of it goes into a checkpoint."""

    epoch: int = 0  # 0-based epoch being trained (== epochs when done)
    step_in_epoch: int = 0  # steps done in that epoch
    global_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch: objective and parts
    metrics: dict[str, float] = field(default_factory=dict)  # at the latest epoch end
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0  # seconds trained before this run


def run_job(
    plan: JobPlan,
    checkpoint: Path | None,
    emit: Callable[[training_pb2.JobEvent], None],
    control: Control,
    digest: str = "",
) -> None:
    """Train ``plan`` to its end (or a cancel/interrupt), calling ``emit`` with every event.

    With ``checkpoint`` set, resumes from it when it exists (and belongs to
    ``digest``), writes it at every epoch end and on an interrupt. Returns
    after emitting the terminal (or INTERRUPTED) event; a failure is a FAILED event, not an exception.
    """
    _Run(plan, checkpoint, emit, control, digest).run()


class _Run:
    def __init__(self, plan: JobPlan, checkpoint: Path | None, emit: Callable[[training_pb2.JobEvent], None],
                 control: Control, digest: str) -> None:
        self.plan, self.checkpoint, self.emit, self.control, self.digest = plan, checkpoint, emit, control, digest
        torch.manual_seed(plan.seed)
        self.model = build_model(plan.model, plan.in_features, plan.out_features)
        self.optimizer = build_optimizer(plan.optimizer, self.model)
        self.scheduler = build_scheduler(plan.schedule, self.optimizer)
        params = dict(self.model.named_parameters())
        self.covered = [params[n] for n in plan.covered]
        data, target = plan.data, plan.target
        self.x_train, self.t_train = data.x[plan.train_index], target[plan.train_index]
        self.x_val, self.t_val = data.x[plan.val_index], target[plan.val_index]
        labels = data.labels
        self.l_train = labels[plan.train_index] if labels is not None else None
        self.l_val = labels[plan.val_index] if labels is not None else None
        self.progress = _Progress()
        self.run_start = time.perf_counter()
        self.run_steps = 0
        self.run_samples = 0

    # -- events ---------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.progress.elapsed + (time.perf_counter() - self.run_start)

    def _event(self, kind: int, state: int, message: str = "") -> training_pb2.JobEvent:
        p, plan = self.progress, self.plan
        now = time.perf_counter() - self.run_start
        ev = training_pb2.JobEvent(
            kind=kind, state=state, epoch=min(p.epoch + 1, plan.epochs) if p.global_step else 0,
            epochs=plan.epochs, step=p.global_step, total_steps=plan.total_steps, message=message,
            lr=float(self.optimizer.param_groups[0]["lr"]), metrics=p.metrics, elapsed_s=self._elapsed(),
        )
        if plan.optimizer.groups:
            ev.lrs.update({g["name"]: float(g["lr"]) for g in self.optimizer.param_groups})
        steps = p.sums.get("steps", 0.0)
        if steps:
            ev.loss = p.sums["objective"] / steps
            ev.loss_parts.update({k: p.sums[k] / steps for k in ("loss", "l1", "l2") if k in p.sums})
        elif p.history:
            ev.loss = p.history[-1]["loss"]
            ev.loss_parts.update(p.history[-1]["loss_parts"])
        if self.run_steps and now > 0:
            ev.samples_per_second = self.run_samples / now
            ev.eta_s = (plan.total_steps - p.global_step) * now / self.run_steps
        ev.time.GetCurrentTime()
        return ev

    def _terminal(self, state: int, message: str, parameters: bool) -> None:
        ev = self._event(Kind.JOB_EVENT_KIND_STATE, state, message)
        ev.eta_s = 0.0
        for h in self.progress.history:
            ev.history.add(epoch=h["epoch"], loss=h["loss"], loss_parts=h["loss_parts"], metrics=h["metrics"], lr=h["lr"])
        if parameters:
            for name, t in self.model.state_dict().items():
                ev.parameters[name].CopyFrom(encode_tensor(t, "raw"))
        self.emit(ev)

    # -- checkpoints ----------------------------------------------------------------------------

    def _save(self) -> None:
        if self.checkpoint is None:
            return
        p = self.progress
        save_checkpoint(self.checkpoint, {
            "format": CHECKPOINT_FORMAT, "digest": self.digest,
            "epoch": p.epoch, "step_in_epoch": p.step_in_epoch, "global_step": p.global_step,
            "sums": dict(p.sums), "metrics": dict(p.metrics), "history": list(p.history), "elapsed": self._elapsed(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "rng": torch.get_rng_state(),
        })

    def _restore(self) -> str:
        """Load the checkpoint if there is one; returns a note for the RUNNING event."""
        if self.checkpoint is None:
            return "started"
        try:
            state = load_checkpoint(self.checkpoint)
        except Exception as e:  # a damaged file: the run is deterministic, so starting over gives the same result
            return f"started over: the checkpoint could not be read ({type(e).__name__})"
        if state is None:
            return "started"
        if state.get("format") != CHECKPOINT_FORMAT or state.get("digest") != self.digest:
            return "started over: the checkpoint belongs to another spec or format"
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.progress = _Progress(
            epoch=state["epoch"], step_in_epoch=state["step_in_epoch"], global_step=state["global_step"],
            sums=dict(state["sums"]), metrics=dict(state["metrics"]), history=list(state["history"]),
            elapsed=state["elapsed"],
        )
        where = f"epoch {state['epoch'] + 1}" + (f", step {state['step_in_epoch'] + 1} of the epoch"
                                                 if state["step_in_epoch"] else "")
        return f"resumed from the checkpoint at step {state['global_step']}: continuing with {where}"

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        plan = self.plan
        note = self._restore()
        p = self.progress
        self.run_start = time.perf_counter()
        self.emit(self._event(Kind.JOB_EVENT_KIND_STATE, State.JOB_STATE_RUNNING, note))
        if p.global_step == 0:
            for text in plan.warnings:
                self.emit(self._event(Kind.JOB_EVENT_KIND_WARNING, State.JOB_STATE_RUNNING, text))
        interval = 1.0 / plan.step_events_per_second if plan.step_events_per_second > 0 else math.inf
        last_emit = time.perf_counter()
        n_train, bs, steps_per_epoch = len(self.x_train), plan.batch_size, plan.steps_per_epoch
        reg = plan.regularization
        while p.epoch < plan.epochs:
            perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(epoch_seed(plan.seed, p.epoch)))
            self.model.train()
            for b in range(p.step_in_epoch, steps_per_epoch):
                if self.control.cancel.is_set():
                    self._terminal(State.JOB_STATE_CANCELLED,
                                   f"cancelled after step {p.global_step} (epoch {p.epoch + 1})", parameters=True)
                    return
                if self.control.interrupt.is_set():
                    self._save()
                    self.emit(self._event(Kind.JOB_EVENT_KIND_STATE, State.JOB_STATE_INTERRUPTED,
                                          f"server shutting down: checkpoint at step {p.global_step}; the job "
                                          "resumes when the server restarts"))
                    return
                index = perm[b * bs:(b + 1) * bs]
                step = p.global_step + 1
                output = self.model(self.x_train[index])
                try:
                    data_loss = plan.loss(output, self.t_train[index])
                except LossError as e:
                    if not bool(torch.isfinite(output).all()):
                        self._fail(f"loss became NaN at step {step}: the model output is not finite")
                    else:
                        self._fail(f"the loss refused the batch at step {step}: {e}")
                    return
                objective = data_loss
                parts = {"loss": float(data_loss.detach())}
                if reg.l1 or reg.l2:
                    flat = torch.cat([t.reshape(-1) for t in self.covered])
                    if reg.l1:
                        l1 = reg.l1 * flat.abs().sum()
                        parts["l1"] = float(l1.detach())
                        objective = objective + l1
                    if reg.l2:
                        l2 = 0.5 * reg.l2 * flat.pow(2).sum()
                        parts["l2"] = float(l2.detach())
                        objective = objective + l2
                value = float(objective.detach())
                if not math.isfinite(value):
                    self._fail(f"loss became {'NaN' if math.isnan(value) else 'infinite'} at step {step} "
                               f"(epoch {p.epoch + 1})")
                    return
                self.optimizer.zero_grad(set_to_none=True)
                objective.backward()
                self.optimizer.step()
                p.global_step, p.step_in_epoch = step, b + 1
                p.sums["steps"] = p.sums.get("steps", 0.0) + 1
                p.sums["objective"] = p.sums.get("objective", 0.0) + value
                for k, v in parts.items():
                    p.sums[k] = p.sums.get(k, 0.0) + v
                self.run_steps += 1
                self.run_samples += len(index)
                now = time.perf_counter()
                if b + 1 < steps_per_epoch and now - last_emit >= interval:
                    last_emit = now
                    self.emit(self._event(Kind.JOB_EVENT_KIND_STEP, State.JOB_STATE_RUNNING))
            self._end_epoch()
        self._terminal(State.JOB_STATE_SUCCEEDED, f"finished {plan.epochs} epochs ({p.global_step} steps)",
                       parameters=True)

    def _end_epoch(self) -> None:
        plan, p = self.plan, self.progress
        lr = float(self.optimizer.param_groups[0]["lr"])
        lrs = {g["name"]: float(g["lr"]) for g in self.optimizer.param_groups} if plan.optimizer.groups else {}
        if self.scheduler is not None:
            self.scheduler.step()
        threshold = plan.classification_threshold
        metrics = evaluate_split(self.model, self.x_train, self.t_train, self.l_train, plan.metrics, "train", threshold)
        metrics.update(evaluate_split(self.model, self.x_val, self.t_val, self.l_val, plan.metrics, "val", threshold,
                                      loss=plan.loss))
        steps = p.sums.get("steps", 1.0)
        summary = {
            "epoch": p.epoch + 1, "loss": p.sums.get("objective", 0.0) / steps,
            "loss_parts": {k: p.sums[k] / steps for k in ("loss", "l1", "l2") if k in p.sums},
            "metrics": metrics, "lr": lr,
        }
        event = self._event(Kind.JOB_EVENT_KIND_EPOCH, State.JOB_STATE_RUNNING)
        event.lr = lr
        if lrs:
            event.lrs.clear()
            event.lrs.update(lrs)
        event.metrics.clear()
        event.metrics.update(metrics)
        p.history.append(summary)
        p.metrics = metrics
        p.epoch += 1
        p.step_in_epoch = 0
        p.sums = {}
        self._save()  # before the event: an epoch the server has heard of always has its checkpoint
        event.elapsed_s = self._elapsed()
        self.emit(event)

    def _fail(self, reason: str) -> None:
        self._terminal(State.JOB_STATE_FAILED, reason, parameters=False)
