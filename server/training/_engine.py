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

Data-parallel (``world=World(rank, size)``, torch.distributed initialised by
the caller, see ``_distributed``): the model is wrapped in
``DistributedDataParallel``; each epoch's permutation is split by a
``DistributedSampler`` (the same permutation as one process), rank ``r``
taking its ``batch_size / size`` samples of every global batch; the step's
loss terms and the cancel/interrupt flags are summed across the ranks in one
``all_reduce`` after the forward pass, so every rank stops at the same step;
at each epoch's end (and at a cancel or an interrupt) one more ``all_reduce``
tells them whether the parameters are all finite, so every rank fails together;
only rank 0 reports and writes checkpoints (with every rank's RNG state).

A NaN or infinite objective ends the job FAILED at the step that computed it
(before its backward pass); parameters that an optimizer step made non-finite
end it FAILED at the epoch's end, before its checkpoint (no checkpoint and no
terminal event ever holds them).

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
import io
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from ..._model import build_model
from ..._wire import FieldError
from ...v1 import training_pb2
from ..evaluation import add_penalties
from ..rpc import encode_tensor
from ._checkpoint import load_checkpoint, save_checkpoint
from ._metrics import evaluate_split
from ._optim import build_optimizer, build_scheduler
from ._spec import JobPlan

__all__ = [
    "Control",
    "Controls",
    "Flag",
    "REPLAYED_EPOCH",
    "RankFailure",
    "World",
    "follows_checkpoint",
    "missed_epochs",
    "run_job",
    "stopped_event",
    "spec_digest",
    "epoch_seed",
    "rank_indices",
    "rank_seed",
]

State = training_pb2.JobState
Kind = training_pb2.JobEventKind
CHECKPOINT_FORMAT = 1


@dataclass
class Control:
    """Requests from the server to a running job, checked before every step.

    ``lease_until`` (``time.monotonic()``, the same clock in every process of the machine): the server's
    lease on the job holds until then; a one-process run does not take a step past it until the server
    renews it (a server frozen past its lease lets its worker compute nothing more).
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    interrupt: threading.Event = field(default_factory=threading.Event)
    lease_until: float = math.inf

    def wait_for_lease(self) -> None:
        """Return once the lease holds, or a cancel or interrupt was asked for."""
        while time.monotonic() > self.lease_until and not (self.cancel.is_set() or self.interrupt.is_set()):
            time.sleep(0.02)


class Flag(Protocol):
    """What the loop reads of a request: ``threading.Event.is_set``, or a data-parallel
    rank's view of a flag in shared memory (``_distributed.py``)."""

    def is_set(self) -> bool: ...


class Controls(Protocol):
    """What :func:`run_job` reads: a :class:`Control`, or a rank's shared flags."""

    @property
    def cancel(self) -> Flag: ...

    @property
    def interrupt(self) -> Flag: ...

    def wait_for_lease(self) -> None:
        """Return once the server's lease on the job holds (or a cancel or interrupt was asked for)."""


@dataclass(frozen=True)
class World:
    """This process's place among a data-parallel job's ranks (``torch.distributed`` is initialised)."""

    rank: int
    size: int


class RankFailure(RuntimeError):
    """A rank cannot go on (e.g. the loss refused its shard); the launcher ends the job FAILED with this text."""


def follows_checkpoint(event: training_pb2.JobEvent) -> bool:
    """Whether the run wrote its checkpoint just before emitting ``event`` (an epoch's end, an interrupt), so
    that a shared job store can keep that checkpoint with the event."""
    return event.kind == Kind.JOB_EVENT_KIND_EPOCH or (
        event.kind == Kind.JOB_EVENT_KIND_STATE and event.state == State.JOB_STATE_INTERRUPTED)


def spec_digest(spec_bytes: bytes) -> str:
    """Identifies the spec a checkpoint belongs to."""
    return hashlib.sha256(spec_bytes).hexdigest()


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s shuffle (0-based epoch).

    >>> epoch_seed(42, 0), epoch_seed(42, 1)
    (42000126, 42000127)
    """
    return (seed * 1_000_003 + epoch) % (2**63)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s global RNG (dropout) after the model's initialisation; rank 0 keeps the
    one-process RNG stream.

    >>> rank_seed(42, 1)
    42000125
    """
    return (seed * 1_000_003 - rank) % (2**63)


def rank_indices(n: int, seed: int, epoch: int, rank: int = 0, size: int = 1) -> torch.Tensor:
    """Rank ``rank``'s positions of epoch ``epoch``'s shuffle of ``n`` training samples.

    A ``DistributedSampler`` whose ``seed + epoch`` is :func:`epoch_seed`, so the one-process
    permutation is ``torch.randperm(n, generator=manual_seed(epoch_seed(seed, epoch)))`` and rank
    ``r`` of ``size`` gets its elements ``r, r + size, ...``; with ``n`` and the batch size divisible
    by ``size`` the ranks' shares of batch ``b`` make up exactly the one-process batch ``b``:

    >>> perm = rank_indices(8, 3, 0)
    >>> bool((perm == torch.randperm(8, generator=torch.Generator().manual_seed(epoch_seed(3, 0)))).all())
    True
    >>> r0, r1 = rank_indices(8, 3, 0, 0, 2), rank_indices(8, 3, 0, 1, 2)
    >>> sorted(torch.cat([r0[:2], r1[:2]]).tolist()) == sorted(perm[:4].tolist())
    True
    """
    # DistributedSampler reads only len() of its data set: a range is enough.
    sampler: DistributedSampler[int] = DistributedSampler(
        range(n), num_replicas=size, rank=rank, shuffle=True,  # type: ignore[arg-type]
        seed=epoch_seed(seed, epoch) - epoch, drop_last=False)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


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


#: The RUNNING event's note of a run that starts with no checkpoint, as a job that has not trained before does.
STARTED = "started"


def _read_checkpoint(path: Path, digest: str) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint at ``path`` if there is one and it belongs to the spec of ``digest``; else ``None`` and the
    note a run that starts says (``started``, or why it starts over)."""
    try:
        state = load_checkpoint(path)
    except Exception as e:  # a damaged file: the run is deterministic, so starting over gives the same result
        return None, f"started over: the checkpoint could not be read ({type(e).__name__})"
    if state is None:
        return None, STARTED
    if state.get("format") != CHECKPOINT_FORMAT or state.get("digest") != digest:
        return None, "started over: the checkpoint belongs to another spec or format"
    return state, ""


def _set_loss(ev: training_pb2.JobEvent, sums: dict[str, float], history: list[dict[str, Any]]) -> None:
    """The event's objective and parts: the running epoch's means, else the last finished epoch's."""
    steps = sums.get("steps", 0.0)
    if steps:
        ev.loss = sums["objective"] / steps
        ev.loss_parts.update({k: sums[k] / steps for k in ("loss", "l1", "l2") if k in sums})
    elif history:
        ev.loss = history[-1]["loss"]
        ev.loss_parts.update(history[-1]["loss_parts"])


def _add_history(ev: training_pb2.JobEvent, history: list[dict[str, Any]]) -> None:
    for h in history:
        ev.history.add(epoch=h["epoch"], loss=h["loss"], loss_parts=h["loss_parts"], metrics=h["metrics"], lr=h["lr"])


def stopped_event(checkpoint: Path, digest: str, state: training_pb2.JobState, message: str, *, epochs: int,
                  total_steps: int) -> training_pb2.JobEvent | None:
    """The terminal event of a job that ends while no worker trains it (cancelled while it waited to resume,
    or while its worker was still planning) as its checkpoint leaves it: the position, objective, metrics,
    history, learning rates and parameters (raw) there. ``message`` may name ``{step}`` and ``{epoch}``.
    ``None`` when the job never trained: no checkpoint of the spec of ``digest`` (one that cannot be read,
    or belongs to another spec, would have been started over), or one from before the first step."""
    saved, _ = _read_checkpoint(checkpoint, digest)
    if saved is None or not saved.get("global_step"):
        return None
    step = int(saved["global_step"])
    epoch = min(int(saved["epoch"]) + 1, epochs)
    ev = training_pb2.JobEvent(kind=Kind.JOB_EVENT_KIND_STATE, state=state, epoch=epoch, epochs=epochs, step=step,
                               total_steps=total_steps, message=message.format(step=step, epoch=epoch),
                               metrics=saved["metrics"], elapsed_s=float(saved["elapsed"]), eta_s=0.0)
    groups = saved["optimizer"]["param_groups"]
    ev.lr = float(groups[0]["lr"])
    if any(g.get("name") != "default" for g in groups):  # the spec has param_groups (as _Run._event)
        ev.lrs.update({str(g["name"]): float(g["lr"]) for g in groups})
    _set_loss(ev, saved["sums"], saved["history"])
    _add_history(ev, saved["history"])
    for name, t in saved["model"].items():
        ev.parameters[name].CopyFrom(encode_tensor(t, "raw"))
    ev.time.GetCurrentTime()
    return ev


#: The message of an EPOCH event stored from a checkpoint (:func:`missed_epochs`).
REPLAYED_EPOCH = ("replayed from the job's checkpoint: its worker saved this epoch, but its server stopped before "
                  "storing the event")


def missed_epochs(checkpoint: Path, digest: str, stored: int, *, epochs: int,
                  total_steps: int) -> list[training_pb2.JobEvent]:
    """The EPOCH events of the epochs after ``stored`` (the last epoch whose event the store holds) that the
    checkpoint has finished: a worker saves an epoch's checkpoint before it sends the event, so a server killed
    between the two lost that event while the resumed run goes on from the next epoch (docs/training.md: every
    epoch has its EPOCH event). Built from the epoch's history row: its objective, parts, metrics and learning
    rate; the step is the epoch's last. None for a checkpoint of another spec, or none at all."""
    saved, _ = _read_checkpoint(checkpoint, digest)
    if saved is None:
        return []
    steps_per_epoch = total_steps // epochs if epochs else 0
    out = []
    for h in saved["history"]:
        if int(h["epoch"]) <= stored:
            continue
        ev = training_pb2.JobEvent(kind=Kind.JOB_EVENT_KIND_EPOCH, state=State.JOB_STATE_RUNNING,
                                   epoch=int(h["epoch"]), epochs=epochs, step=int(h["epoch"]) * steps_per_epoch,
                                   total_steps=total_steps, message=REPLAYED_EPOCH, lr=float(h["lr"]),
                                   loss=float(h["loss"]), metrics=h["metrics"])
        ev.loss_parts.update(h["loss_parts"])
        ev.time.GetCurrentTime()
        out.append(ev)
    return out


def run_job(
    plan: JobPlan,
    checkpoint: Path | None,
    emit: Callable[[training_pb2.JobEvent], None],
    control: Controls,
    digest: str = "",
    world: World | None = None,
    reached_step: int = 0,
) -> None:
    """Train ``plan`` to its end (or a cancel/interrupt), calling ``emit`` with every event.

    With ``checkpoint`` set, resumes from it when it exists (and belongs to
    ``digest``), writes it at every epoch end and on an interrupt; ``reached_step``, the step the job had
    reached before (its store's), makes a run without a checkpoint say that it starts over. Returns
    after emitting the terminal (or INTERRUPTED) event; a failure is a FAILED event, not an exception
    (with ``world``, a failure of this rank alone raises :class:`RankFailure`). With ``world``, only
    rank 0 emits and writes the checkpoint.
    """
    _Run(plan, checkpoint, emit, control, digest, world, reached_step).run()


class _Run:
    def __init__(self, plan: JobPlan, checkpoint: Path | None, emit: Callable[[training_pb2.JobEvent], None],
                 control: Controls, digest: str, world: World | None = None, reached_step: int = 0) -> None:
        self.plan, self.checkpoint, self.control, self.digest, self.world = plan, checkpoint, control, digest, world
        self.reached_step = reached_step
        self.reporter = world is None or world.rank == 0
        self.emit = emit if self.reporter else (lambda event: None)
        torch.manual_seed(plan.seed)
        self.model = build_model(plan.model, plan.in_features, plan.out_features)
        self.net: torch.nn.Module = self.model  # what the forward pass goes through: the DDP wrapper with a world
        if world is not None and world.rank:
            torch.manual_seed(rank_seed(plan.seed, world.rank))
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

    def _event(self, kind: training_pb2.JobEventKind, state: training_pb2.JobState,
               message: str = "") -> training_pb2.JobEvent:
        p, plan = self.progress, self.plan
        now = time.perf_counter() - self.run_start
        ev = training_pb2.JobEvent(
            kind=kind, state=state, epoch=min(p.epoch + 1, plan.epochs) if p.global_step else 0,
            epochs=plan.epochs, step=p.global_step, total_steps=plan.total_steps, message=message,
            lr=float(self.optimizer.param_groups[0]["lr"]), metrics=p.metrics, elapsed_s=self._elapsed(),
        )
        if plan.optimizer.groups:
            ev.lrs.update({g["name"]: float(g["lr"]) for g in self.optimizer.param_groups})
        _set_loss(ev, p.sums, p.history)
        if self.run_steps and now > 0:
            ev.samples_per_second = self.run_samples / now
            ev.eta_s = (plan.total_steps - p.global_step) * now / self.run_steps
        ev.time.GetCurrentTime()
        return ev

    def _terminal(self, state: training_pb2.JobState, message: str, parameters: bool) -> None:
        ev = self._event(Kind.JOB_EVENT_KIND_STATE, state, message)
        ev.eta_s = 0.0
        _add_history(ev, self.progress.history)
        if parameters and self.reporter:
            for name, t in self.model.state_dict().items():  # the module's own names, no "module." prefix
                ev.parameters[name].CopyFrom(encode_tensor(t, "raw"))
        self.emit(ev)

    # -- checkpoints ----------------------------------------------------------------------------

    def _save(self) -> None:
        if self.checkpoint is None and self.world is None:
            return
        rng = torch.get_rng_state()
        extra: dict[str, Any] = {}
        if self.world is not None:  # collective: every rank's RNG state goes into rank 0's file
            states = [torch.empty_like(rng) for _ in range(self.world.size)]
            dist.all_gather(states, rng)
            if not self.reporter or self.checkpoint is None:
                return
            extra = {"world_size": self.world.size, "rng_ranks": states}
        assert self.checkpoint is not None  # without one, a return above was taken
        p = self.progress
        save_checkpoint(self.checkpoint, {**extra,
            "format": CHECKPOINT_FORMAT, "digest": self.digest,
            "epoch": p.epoch, "step_in_epoch": p.step_in_epoch, "global_step": p.global_step,
            "sums": dict(p.sums), "metrics": dict(p.metrics), "history": list(p.history), "elapsed": self._elapsed(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "rng": rng,
        })

    def _checked(self) -> tuple[dict[str, Any] | None, str]:
        """This process's checkpoint, if there is one and it belongs to this spec; else why not."""
        if self.checkpoint is None:
            return None, STARTED
        state, note = _read_checkpoint(self.checkpoint, self.digest)
        if state is None and note == STARTED and self.reached_step:  # trained before, yet no checkpoint
            return None, (f"started over: the job had reached step {self.reached_step}, but it has no checkpoint to "
                          f"resume from ({self.checkpoint.parent.name}/{self.checkpoint.name} is missing)")
        if state is None:
            return None, note
        if self.world is not None and (state.get("world_size") != self.world.size
                                       or not isinstance(state.get("rng_ranks"), list)):
            return None, "started over: the checkpoint was written by another number of ranks"
        return state, ""

    def _shared(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """Rank 0's checked checkpoint on every rank (collective): its bytes are broadcast, so ranks on
        other machines resume from it too, and every rank takes rank 0's decision."""
        data = b""
        if self.reporter and state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            data = buffer.getvalue()
        size = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(size, 0)
        if not int(size):
            return None
        tensor = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.reporter
                  else torch.empty(int(size), dtype=torch.uint8))
        dist.broadcast(tensor, 0)
        if self.reporter:
            return state
        shared = torch.load(io.BytesIO(tensor.numpy().tobytes()), map_location="cpu", weights_only=True)
        return shared if isinstance(shared, dict) else None

    def _restore(self) -> str:
        """Load the checkpoint if there is one; returns a note for the RUNNING event."""
        state, note = self._checked() if self.reporter else (None, "")
        if self.world is not None:
            state = self._shared(state)
        if state is None:
            return note
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"] if self.world is None else state["rng_ranks"][self.world.rank])
        self.progress = _Progress(
            epoch=state["epoch"], step_in_epoch=state["step_in_epoch"], global_step=state["global_step"],
            sums=dict(state["sums"]), metrics=dict(state["metrics"]), history=list(state["history"]),
            elapsed=state["elapsed"],
        )
        if state["epoch"] >= self.plan.epochs:  # written at the last epoch's end: the job stopped before its end
            return (f"resumed from the checkpoint at step {state['global_step']}: all {self.plan.epochs} epochs are "
                    "done; only the final event remains")
        where = f"epoch {state['epoch'] + 1}" + (f", step {state['step_in_epoch'] + 1} of the epoch"
                                                 if state["step_in_epoch"] else "")
        return f"resumed from the checkpoint at step {state['global_step']}: continuing with {where}"

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        plan = self.plan
        note = self._restore()
        world = self.world
        if world is not None:
            # After the restore (DDP broadcasts rank 0's parameters); the forward goes through the wrapper,
            # never .module, so that backward averages the gradients over the ranks.
            self.net = DistributedDataParallel(self.model)
            note += f" ({world.size} data-parallel ranks)"
        p = self.progress
        self.run_start = time.perf_counter()
        self.emit(self._event(Kind.JOB_EVENT_KIND_STATE, State.JOB_STATE_RUNNING, note))
        if p.global_step == 0:
            for text in plan.warnings:
                self.emit(self._event(Kind.JOB_EVENT_KIND_WARNING, State.JOB_STATE_RUNNING, text))
        interval = 1.0 / plan.step_events_per_second if plan.step_events_per_second > 0 else math.inf
        last_emit = time.perf_counter()
        n_train, bs, steps_per_epoch = len(self.x_train), plan.batch_size, plan.steps_per_epoch
        size = world.size if world is not None else 1
        local_bs = bs // size  # plan_job refuses a batch size (or a training split) that size does not divide
        # A sum-reduced loss: DDP averages the ranks' gradients, so each rank's shard sum counts size times.
        loss_scale = float(size) if plan.reduction == "sum" else 1.0
        reg = plan.regularization
        while p.epoch < plan.epochs:
            mine = rank_indices(n_train, plan.seed, p.epoch, world.rank if world else 0, size)
            self.net.train()
            for b in range(p.step_in_epoch, steps_per_epoch):
                if world is not None:  # the ranks look at the flags together, in the step's all_reduce
                    rng_before = torch.get_rng_state()
                else:
                    self.control.wait_for_lease()
                    if self.control.cancel.is_set():
                        self._cancelled()
                        return
                    if self.control.interrupt.is_set():
                        self._interrupted()
                        return
                index = mine[b * local_bs:(b + 1) * local_bs]
                step = p.global_step + 1
                output = self.net(self.x_train[index])
                try:
                    data_loss = plan.loss(output, self.t_train[index])
                except FieldError as e:
                    if world is not None:
                        raise RankFailure(f"the loss refused the batch at step {step} on rank {world.rank}: {e}") from e
                    if not bool(torch.isfinite(output).all()):
                        self._fail(f"loss became NaN at step {step}: the model output is not finite")
                    else:
                        self._fail(f"the loss refused the batch at step {step}: {e}")
                    return
                objective = data_loss
                parts = {"loss": float(data_loss.detach())}
                if reg.l1 or reg.l2:  # one sum over every covered entry, as a plain torch loop writes it
                    flat = torch.cat([t.reshape(-1) for t in self.covered])
                    objective = add_penalties(objective, [flat], reg, parts)
                value = float(objective.detach())
                if world is not None:
                    stop = self._reduce_step(parts, size, loss_scale)
                    if stop == "cancel":
                        self._cancelled()
                        return
                    if stop == "interrupt":
                        torch.set_rng_state(rng_before)  # the checkpoint's RNG is the one before this step
                        self._interrupted()
                        return
                    value = sum(parts.values())
                    if loss_scale != 1.0:
                        objective = objective + (loss_scale - 1.0) * data_loss
                if not math.isfinite(value):
                    self._fail(f"loss became {'NaN' if math.isnan(value) else 'infinite'} at step {step} "
                               f"(epoch {p.epoch + 1})")
                    return
                self.optimizer.zero_grad(set_to_none=True)
                objective.backward()
                try:
                    self.optimizer.step()
                except RuntimeError as e:  # plan_job refuses the settings that fail at once; a schedule's rounding
                    if "without overflow" not in str(e):  # can still take a learning rate an ulp past float32
                        raise
                    rates = ", ".join(repr(float(g["lr"])) for g in self.optimizer.param_groups)
                    self._fail(f"the optimizer's step {step} (epoch {p.epoch + 1}) does not fit in float32: "
                               f"{str(e).strip()} (learning rate {rates})")
                    return
                p.global_step, p.step_in_epoch = step, b + 1
                p.sums["steps"] = p.sums.get("steps", 0.0) + 1
                p.sums["objective"] = p.sums.get("objective", 0.0) + value
                for k, v in parts.items():
                    p.sums[k] = p.sums.get(k, 0.0) + v
                self.run_steps += 1
                self.run_samples += len(index) * size
                now = time.perf_counter()
                if b + 1 < steps_per_epoch and now - last_emit >= interval:
                    last_emit = now
                    self.emit(self._event(Kind.JOB_EVENT_KIND_STEP, State.JOB_STATE_RUNNING))
            if not self._parameters_finite():  # before the epoch's checkpoint, metrics and the terminal event
                self._fail_parameters()
                return
            self._end_epoch()
        self._terminal(State.JOB_STATE_SUCCEEDED, f"finished {plan.epochs} epochs ({p.global_step} steps)",
                       parameters=True)

    def _cancelled(self) -> None:
        p = self.progress
        if not self._parameters_finite():  # a cancel never hands back NaN parameters as "the parameters so far"
            self._fail_parameters()
            return
        self._terminal(State.JOB_STATE_CANCELLED, f"cancelled after step {p.global_step} (epoch {p.epoch + 1})",
                       parameters=True)

    def _interrupted(self) -> None:
        """Checkpoint at this step boundary and end INTERRUPTED (the server is shutting down); parameters
        that are no longer finite end the job FAILED instead (no checkpoint holds them)."""
        if not self._parameters_finite():
            self._fail_parameters()
            return
        self._save()
        self.emit(self._event(Kind.JOB_EVENT_KIND_STATE, State.JOB_STATE_INTERRUPTED,
                              f"server shutting down: checkpoint at step {self.progress.global_step}; the job "
                              "resumes when the server restarts"))

    def _reduce_step(self, parts: dict[str, float], size: int, loss_scale: float) -> str:
        """Sum this step's loss terms and the cancel/interrupt flags over the ranks (one ``all_reduce``);
        ``parts`` becomes the global batch's terms. Returns ``"cancel"``, ``"interrupt"`` or ``""``: the same
        on every rank."""
        keys = [k for k in ("loss", "l1", "l2") if k in parts]
        flags = [float(self.control.cancel.is_set()), float(self.control.interrupt.is_set())]
        vec = torch.tensor([parts[k] for k in keys] + flags, dtype=torch.float64)
        dist.all_reduce(vec)
        if vec[-2] > 0:
            return "cancel"
        if vec[-1] > 0:
            return "interrupt"
        for i, k in enumerate(keys):  # shard means average to the batch mean; shard sums add up; l1/l2 are equal
            parts[k] = float(vec[i]) / (1.0 if (k == "loss" and loss_scale != 1.0) else size)
        return ""

    def _end_epoch(self) -> None:
        plan, p = self.plan, self.progress
        lr = float(self.optimizer.param_groups[0]["lr"])
        lrs = {g["name"]: float(g["lr"]) for g in self.optimizer.param_groups} if plan.optimizer.groups else {}
        if self.scheduler is not None:
            self.scheduler.step()
        threshold = plan.classification_threshold
        metrics: dict[str, float] = {}
        if self.reporter:  # the ranks hold the same model: rank 0 evaluates it once
            metrics = evaluate_split(self.model, self.x_train, self.t_train, self.l_train, plan.metrics, "train",
                                     threshold)
            try:
                metrics.update(evaluate_split(self.model, self.x_val, self.t_val, self.l_val, plan.metrics, "val",
                                              threshold, loss=plan.loss))
            except FieldError as e:  # the job fails saying where (the worker reports it)
                raise FieldError(e.field, f"the loss refused the validation split at the end of epoch {p.epoch + 1}: "
                                 f"{e.message}", e.code) from e
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

    def _parameters_finite(self) -> bool:
        """Whether every parameter is finite (no NaN, no infinity). A step's loss is checked before its
        backward pass, so the step that makes the parameters non-finite is the one no loss check sees
        when it is the last of the job or of an epoch: this runs once per epoch, before the epoch's
        checkpoint, and before a cancel's or an interrupt's. With ``world``, the ranks decide together
        (one ``all_reduce`` of the flag), so that every rank stops at the same point, as at a NaN loss."""
        bad = any(not bool(torch.isfinite(t).all()) for t in self.model.parameters())
        if self.world is None:
            return not bad
        flag = torch.tensor([float(bad)], dtype=torch.float64)
        dist.all_reduce(flag)
        return not float(flag)

    def _fail_parameters(self) -> None:
        p = self.progress
        self._fail(f"parameters became NaN or infinite by step {p.global_step} (epoch {p.epoch + 1}): the "
                   "optimizer's update made them non-finite")

    def _fail(self, reason: str) -> None:
        self._terminal(State.JOB_STATE_FAILED, reason, parameters=False)
