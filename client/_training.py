"""Training jobs in the SDK: specs, results, progress display and re-attaching, for both clients.

:class:`~lossd.client.Client` and :class:`~lossd.client.AsyncClient` only move
events; what the events mean lives here. :class:`JobFollower` keeps the last
``seq`` seen, so a dropped stream (``Unavailable``) is resumed with
``WatchJob(after_seq)``, and recognizes the terminal event.

>>> load_spec({"epochs": 2, "optimizer": {"name": "adam"}}).epochs
2
>>> load_spec({"epoch": 2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: spec: epoch: no such field (did you mean epochs?); the fields of TrainJobRequest: model, data, ...
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format

from .. import _methods
from .._model import ModelPlan, build_model
from .._settings import printable
from .._wire import DEFAULT_MAX_MESSAGE_BYTES
from ..v1 import training_pb2
from ._calls import Method
from ._codec import decode
from ._extras import import_extra

__all__ = [
    "CANCEL_JOB", "DELETE_JOB", "GET_JOB", "LIST_JOBS", "TRAIN_JOB", "WATCH_JOB", "TERMINAL_STATES", "JobFollower",
    "Progress", "SpecLike", "TrainResult", "build_module", "epoch_summary", "jobs_table", "load_spec",
    "state_name", "unknown_field",
]

TRAIN_JOB = Method(_methods.TRAIN_JOB, training_pb2.TrainJobResponse.FromString)
WATCH_JOB = Method(_methods.WATCH_JOB, training_pb2.WatchJobResponse.FromString)
GET_JOB = Method(_methods.GET_JOB, training_pb2.GetJobResponse.FromString)
LIST_JOBS = Method(_methods.LIST_JOBS, training_pb2.ListJobsResponse.FromString)
CANCEL_JOB = Method(_methods.CANCEL_JOB, training_pb2.CancelJobResponse.FromString)
DELETE_JOB = Method(_methods.DELETE_JOB, training_pb2.DeleteJobResponse.FromString)

TERMINAL_STATES = frozenset(
    {training_pb2.JOB_STATE_SUCCEEDED, training_pb2.JOB_STATE_FAILED, training_pb2.JOB_STATE_CANCELLED}
)
#: How many times in a row a stream is re-attached after ``Unavailable`` before the error is raised; the
#: count starts over once a re-attached stream delivers an event (:meth:`JobFollower.feed`).
MAX_REATTACH = 10

#: A job spec: the message, a JSON-style dict, or the path of a JSON or YAML file.
SpecLike = training_pb2.TrainJobRequest | Mapping[str, Any] | str | os.PathLike[str]


def state_name(state: int) -> str:
    """``JOB_STATE_SUCCEEDED`` → ``"SUCCEEDED"``.

    >>> state_name(training_pb2.JOB_STATE_RUNNING)
    'RUNNING'
    """
    return training_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


#: The largest spec file read: a request beyond the default message limit could not be sent anyway.
MAX_SPEC_BYTES = DEFAULT_MAX_MESSAGE_BYTES


def _spec_text(path: Path) -> str:
    """A spec file's text: at most :data:`MAX_SPEC_BYTES` (/dev/zero ran out of memory), UTF-8 (a refusal
    naming the file)."""
    with open(path, "rb") as f:
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise ValueError(f"{path}: a spec file is at most {MAX_SPEC_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e})") from None


def _no_aliases(yaml: Any) -> Any:
    """PyYAML's SafeLoader without anchors and aliases: nested aliases expand as they are converted (a
    619-byte spec of 9 levels took over 20 s and 790 MB), and a spec needs none."""

    class NoAliases(yaml.SafeLoader):  # type: ignore[misc]
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "anchors and aliases are not accepted in a spec",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
    return NoAliases


def load_spec(spec: SpecLike) -> training_pb2.TrainJobRequest:
    """A ``TrainJobRequest`` from a message (copied), a dict (``json_format.ParseDict``: an
    unknown or mistyped field is a ``ValueError`` naming it) or a ``.json``/``.yaml``/``.yml`` file
    (YAML needs PyYAML).

    >>> load_spec({"epochs": 3, "data": {"builtin": {"name": "rings"}}}).data.builtin.name
    'rings'
    """
    if isinstance(spec, training_pb2.TrainJobRequest):
        copy = training_pb2.TrainJobRequest()
        copy.CopyFrom(spec)
        return copy
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        text = _spec_text(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            yaml: Any = import_extra("yaml", f"reading the YAML spec {path}")
            try:
                data = yaml.load(text, Loader=_no_aliases(yaml))  # a SafeLoader; aliases refused
            except yaml.YAMLError as e:
                raise ValueError(f"{path}: not valid YAML: {e}") from None
            except RecursionError:  # PyYAML's scanner recurses per level of nesting
                raise ValueError(f"{path}: nested too deeply") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON: {e}") from None
            except RecursionError:  # json's decoder too: '[' * 1000 was a traceback from `lossd train`
                raise ValueError(f"{path}: nested too deeply") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: a spec is a JSON/YAML object, got {type(data).__name__}")
        spec = data
    try:
        unknown = unknown_field(spec, training_pb2.TrainJobRequest.DESCRIPTOR)
        if unknown:
            raise ValueError(f"spec: {unknown}")
        return json_format.ParseDict(dict(spec), training_pb2.TrainJobRequest())
    except json_format.ParseError as e:
        raise ValueError(f"spec: {e}") from None
    except RecursionError:  # a dict nested deeper than Python's recursion limit (ParseDict recurses)
        raise ValueError("spec: nested too deeply") from None


def unknown_field(data: Any, descriptor: Any, path: str = "") -> str | None:
    """The first key of ``data`` (a JSON-style dict) that is no field of the message
    ``descriptor``, as ``path: no such field (did you mean ...?); the fields of M: a, b``
    with the fields in snake_case, as the docs write them; ``None`` when every key is one.

    Free-form fields (``google.protobuf.Struct``, such as ``params``) are not looked into.

    >>> unknown_field({"optimizer": {"name": "adam", "beta": [0.9, 0.99]}}, training_pb2.TrainJobRequest.DESCRIPTOR)
    'optimizer.beta: no such field (did you mean betas?); the fields of OptimizerSpec: name, lr, weight_decay, ...'
    """
    if not isinstance(data, Mapping) or descriptor.full_name.startswith("google.protobuf."):
        return None
    by_name = {**{f.json_name: f for f in descriptor.fields}, **{f.name: f for f in descriptor.fields}}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        found = by_name.get(key)
        if found is None:
            names = [f.name for f in descriptor.fields]
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"{where}: no such field{hint}; the fields of {descriptor.name}: {', '.join(names)}"
        if found.message_type is None:
            continue
        if found.message_type.GetOptions().map_entry:
            value_field = found.message_type.fields_by_name["value"]
            items = value.items() if isinstance(value, Mapping) and value_field.message_type else ()
            for k, v in items:
                inner = unknown_field(v, value_field.message_type, f"{where}.{k}")
                if inner:
                    return inner
        elif found.is_repeated:
            for n, item in enumerate(value if isinstance(value, list) else ()):
                inner = unknown_field(item, found.message_type, f"{where}[{n}]")
                if inner:
                    return inner
        else:
            inner = unknown_field(value, found.message_type, where)
            if inner:
                return inner
    return None


def epoch_summary(summary: training_pb2.EpochSummary | training_pb2.JobEvent) -> dict[str, Any]:
    """One row of a history: ``epoch``, ``loss``, ``loss_parts``, ``metrics``, ``lr`` (maps sorted)."""
    return {
        "epoch": summary.epoch,
        "loss": summary.loss,
        "loss_parts": dict(sorted(summary.loss_parts.items())),
        "metrics": dict(sorted(summary.metrics.items())),
        "lr": summary.lr,
    }


def build_module(spec: training_pb2.TrainJobRequest, in_features: int, out_features: int) -> Any:
    """The server's ``nn.Sequential`` for ``spec.model`` (needs torch), untrained: the one model
    definition, :func:`lossd._model.build_model`.

    Layer names are the contract's: ``fc1``, ``act1``, (``drop1``), ..., ``out``, ``out_act``.
    """
    import_extra("torch", "building the trained model")  # a missing torch named with its pip command
    return build_model(ModelPlan.from_message(spec.model), in_features, out_features)


@dataclass
class TrainResult:
    """A finished job: its ``state`` (``"SUCCEEDED"``, ``"FAILED"``, ``"CANCELLED"``), final
    ``metrics``, per-epoch ``history`` (dicts, see :func:`epoch_summary`) and trained
    ``parameters`` by name (numpy arrays, or torch tensors with ``as_torch=True``).

    >>> r = client.train("spec.json")                        # doctest: +SKIP
    >>> model = r.build_model()   # doctest: +SKIP
    >>> r.plot(path="curve.png")                             # doctest: +SKIP
    """

    job_id: str
    state: str
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    parameters: dict[str, Any]
    loss: float = 0.0
    message: str = ""
    spec: training_pb2.TrainJobRequest | None = None
    #: The terminal event as received.
    event: training_pb2.JobEvent = field(default_factory=training_pb2.JobEvent, repr=False)

    @classmethod
    def from_event(cls, event: training_pb2.JobEvent, spec: training_pb2.TrainJobRequest | None = None,
                   as_torch: bool = False) -> TrainResult:
        """Decode a terminal event."""
        return cls(
            job_id=event.job_id,
            state=state_name(event.state),
            metrics=dict(sorted(event.metrics.items())),
            history=[epoch_summary(h) for h in event.history],
            parameters={k: decode(event.parameters[k], as_torch) for k in sorted(event.parameters)},
            loss=event.loss,
            message=event.message,
            spec=spec,
            event=event,
        )

    @property
    def succeeded(self) -> bool:
        """Whether the job finished all its epochs."""
        return self.state == "SUCCEEDED"

    def state_dict(self) -> dict[str, Any]:
        """The parameters as torch tensors, for ``module.load_state_dict`` (needs torch)."""
        torch: Any = import_extra("torch", "state_dict()")

        return {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(v.copy()) for k, v in self.parameters.items()}

    def load_into(self, module: Any) -> Any:
        """Load the parameters into ``module`` (strictly: names and shapes must match); returns it."""
        module.load_state_dict(self.state_dict())
        return module

    def build_model(self) -> Any:
        """A fresh ``nn.Sequential`` like the server's, with the trained parameters (needs torch
        and the job's spec, which ``train`` and ``get_result`` keep)."""
        if self.spec is None:
            raise ValueError("build_model needs the job's spec; use client.get_result(job_id)")
        if not self.parameters:
            raise ValueError(f"job {self.job_id} ended {self.state} without parameters: {self.message}")
        first = self.parameters["fc1.weight" if "fc1.weight" in self.parameters else "out.weight"]
        out = self.parameters["out.weight"]
        return self.load_into(build_module(self.spec, int(first.shape[1]), int(out.shape[0])))

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """The job's curves as a matplotlib ``Figure`` (needs ``lossd[plot]``); saved when ``path``."""
        from ._plot import plot_history

        return plot_history(self.history, title=f"job {self.job_id} ({self.state})", path=path)


class JobFollower:
    """Follows one job across streams: the last ``seq``, the job id, the terminal event.

    >>> f = JobFollower()
    >>> f.feed(training_pb2.JobEvent(job_id="ab", seq=1, state=training_pb2.JOB_STATE_QUEUED))
    False
    >>> f.job_id, f.after_seq, f.done
    ('ab', 1, False)
    """

    def __init__(self, job_id: str = "", after_seq: int = 0) -> None:
        self.job_id = job_id
        self.after_seq = after_seq
        self.final: training_pb2.JobEvent | None = None
        #: Re-attaches since the last event: the budget of one outage (:data:`MAX_REATTACH`).
        self.reattached = 0

    @property
    def done(self) -> bool:
        """Whether the terminal event arrived."""
        return self.final is not None

    def feed(self, event: training_pb2.JobEvent) -> bool:
        """Take one event; returns whether it is the terminal one (an already-seen ``seq`` is ignored).

        A new event means the stream works: the re-attach budget and backoff start over, so that
        each outage gets all of them however many a long job lives through.
        """
        if event.seq <= self.after_seq:
            return False
        self.reattached = 0
        self.job_id = self.job_id or event.job_id
        self.after_seq = event.seq
        if event.kind == training_pb2.JOB_EVENT_KIND_STATE and event.state in TERMINAL_STATES:
            self.final = event
            return True
        return False

    def is_new(self, event: training_pb2.JobEvent) -> bool:
        """Whether ``event`` has not been seen yet (call before :meth:`feed`)."""
        return event.seq > self.after_seq

    def watch_request(self, output_encoding: int = 0) -> training_pb2.WatchJobRequest:
        """The ``WatchJob`` request that resumes after the last event seen."""
        return training_pb2.WatchJobRequest(job_id=self.job_id, after_seq=self.after_seq,
                                            output_encoding=output_encoding)  # type: ignore[arg-type]

    def may_reattach(self) -> bool:
        """Whether one more re-attach is allowed (counts it): :data:`MAX_REATTACH` in a row, without an
        event between them.

        >>> f = JobFollower("ab")
        >>> [f.may_reattach() for _ in range(MAX_REATTACH + 1)][-2:], round(f.backoff_s(), 1)
        ([True, False], 5.0)
        >>> f.feed(training_pb2.JobEvent(job_id="ab", seq=7)), f.may_reattach(), f.backoff_s()
        (False, True, 0.2)
        """
        if not self.job_id or self.reattached >= MAX_REATTACH:
            return False
        self.reattached += 1
        return True

    def backoff_s(self) -> float:
        """Seconds to wait before the current re-attach: 0.2, 0.4, ... up to 5 (:func:`backoff_s`)."""
        return backoff_s(self.reattached)


def backoff_s(attempt: int) -> float:
    """Seconds to wait before re-attach number ``attempt`` of one outage: 0.2 doubling up to 5.

    >>> [backoff_s(k) for k in range(1, 7)]
    [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    """
    return float(min(5.0, 0.2 * 2 ** (attempt - 1)))


#: How long one outage may last before ``train``/``watch`` give up: the backoffs of the
#: :data:`MAX_REATTACH` re-attaches (about 31 s), plus the time the failed attempts themselves take.
REATTACH_WINDOW_S = sum(backoff_s(k) for k in range(1, MAX_REATTACH + 1))


def _format_metrics(values: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))


class Progress:
    """Shows a job's events: a tqdm bar over its steps when tqdm is installed (``lossd[progress]``),
    else one line per epoch on ``stream`` (stderr).

    >>> import io
    >>> out = io.StringIO()
    >>> p = Progress(stream=out, use_tqdm=False)
    >>> p.update(training_pb2.JobEvent(kind=training_pb2.JOB_EVENT_KIND_EPOCH, epoch=1, epochs=2, loss=0.5,
    ...                                metrics={"val_accuracy": 0.9}))
    >>> out.getvalue()
    'epoch 1/2  loss=0.5  val_accuracy=0.9\\n'
    """

    def __init__(self, stream: IO[str] | None = None, use_tqdm: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._tqdm: Any = None
        if use_tqdm is None or use_tqdm:
            try:
                self._tqdm = import_extra("tqdm.auto", "a progress bar", "progress").tqdm
            except ModuleNotFoundError:
                if use_tqdm:
                    raise
        self._bar: Any = None

    def update(self, event: training_pb2.JobEvent) -> None:
        """Show one event."""
        if self._tqdm is None:
            if event.kind == training_pb2.JOB_EVENT_KIND_EPOCH:
                metrics = _format_metrics(event.metrics)
                print(
                    f"epoch {event.epoch}/{event.epochs}  loss={event.loss:.4g}" + (f"  {metrics}" if metrics else ""),
                    file=self.stream,
                    flush=True,
                )
            elif event.kind == training_pb2.JOB_EVENT_KIND_WARNING or event.state in TERMINAL_STATES:
                line = f"{state_name(event.state)}: {printable(event.message)}".rstrip(": ")
                print(line, file=self.stream, flush=True)
            return
        if event.total_steps and self._bar is None:
            self._bar = self._tqdm(total=event.total_steps, unit="step", file=self.stream, leave=True)
        if self._bar is None:
            return
        self._bar.n = event.step
        self._bar.set_description(f"epoch {event.epoch}/{event.epochs}", refresh=False)
        self._bar.set_postfix_str(f"loss={event.loss:.4g} {_format_metrics(event.metrics)}".strip(), refresh=False)
        self._bar.refresh()
        if event.kind == training_pb2.JOB_EVENT_KIND_WARNING:
            self._bar.write(f"warning: {printable(event.message)}", file=self.stream)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def jobs_table(jobs: Sequence[training_pb2.Job]) -> str:
    """A text table of jobs (``lossd jobs``); a name's unprintable characters escaped (any submitter names
    a job: a newline forged a row, an escape sequence reached the reader's terminal).

    >>> print(jobs_table([training_pb2.Job(job_id="0123456789ab", name="a\\nb\\x1b[31m")]))
    JOB           STATE        EPOCH  LOSS  RANKS  NAME
    0123456789ab  UNSPECIFIED  0/0    0     1      a\\nb\\x1b[31m
    """
    rows = [("JOB", "STATE", "EPOCH", "LOSS", "RANKS", "NAME")]
    for j in jobs:
        rows.append((j.job_id, state_name(j.state), f"{j.epoch}/{j.epochs}", f"{j.loss:.4g}", str(j.world_size or 1),
                     printable(j.name)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
