"""The defaults and limits that the settings table (:mod:`._config`) reads from the layers below it, and
how a ``--plugins`` value names plugins: torch-free, so that ``lossd serve`` reads and checks its flags
before the server (and torch) loads. Each is declared here once; the layers that apply it import it
from here (concurrency limits: ``interceptors/``; EvaluateLossBatch and dynamic batching, the wire's cap
on a repeated field: ``rpc/``; training: ``training/``; plugins: ``losses/_plugins.py``).

>>> BatchLimits().max_items, TrainingLimits().max_world_size, plugin_names("a, b")
(10000, 8, ['a', 'b'])
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .._wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_ELEMENTS,
    DEFAULT_MAX_TENSOR_ELEMENTS,
    DEFAULT_MAX_TENSORS,
    MAX_LOSS_WORK,
    TensorLimits,
)

__all__ = [
    "DEFAULT_BATCH_WINDOW_US", "DEFAULT_LEASE_S", "DEFAULT_MAX_BATCH_BYTES", "DEFAULT_MAX_BATCH_ITEMS",
    "DEFAULT_MAX_CONCURRENT_RPCS", "DEFAULT_MAX_CONCURRENT_STREAMS", "DEFAULT_RETENTION_S", "MAX_ITEMS", "BatchLimits",
    "TrainingConfig", "TrainingLimits", "plugin_names",
]

# -- calls in flight, server-wide (interceptors/_concurrency.py) --
DEFAULT_MAX_CONCURRENT_RPCS = 256
DEFAULT_MAX_CONCURRENT_STREAMS = 64

# -- requests (rpc/_caps.py, rpc/_batch.py, rpc/_batching.py) --
#: Most entries in a repeated field or map of a request without a cap of its own (:mod:`.rpc._caps`).
MAX_ITEMS = 1024
#: Most items in one EvaluateLossBatch unless configured (``--max-batch-items``).
DEFAULT_MAX_BATCH_ITEMS = 10_000
#: Most tensor bytes (from shapes and dtypes) in one EvaluateLossBatch unless configured (``--max-batch-bytes``).
DEFAULT_MAX_BATCH_BYTES = 128 * 1024 * 1024
#: The default window of dynamic batching, chosen by measurement (docs/performance.md, "Batching").
DEFAULT_BATCH_WINDOW_US = 2000


@dataclass(frozen=True)
class BatchLimits:
    """The server's limits on one EvaluateLossBatch (``--max-batch-items``, ``--max-batch-bytes``)."""

    max_items: int = DEFAULT_MAX_BATCH_ITEMS
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES


# -- training (training/_spec.py, training/_manager.py) --
#: Default ``--job-lease-s``: how long a replica's claim on a job lasts without renewal (docs/scaling.md,
#: "Choosing the lease"). A dead replica's jobs resume elsewhere after at most this long.
DEFAULT_LEASE_S = 10.0
#: Default ``--job-retention``: ended jobs, their events and parameters are deleted this long after they ended.
DEFAULT_RETENTION_S = 30 * 86400.0


@dataclass(frozen=True)
class TrainingLimits:
    """Server limits on a job; each names its ``lossd serve`` flag in errors (``training/_spec.py``)."""

    max_epochs: int = 10_000
    max_steps: int = 1_000_000
    max_parameters: int = 10_000_000
    max_samples: int = 1_000_000
    max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS
    max_tensors: int = DEFAULT_MAX_TENSORS
    max_world_size: int = 8  # data-parallel ranks of one job (keyword only: fields are added above it)
    max_classes: int = 100_000  # classes of a classification data set (keyword only)
    max_layers: int = 100  # hidden layers of an MLP (keyword only)
    max_layer_width: int = 100_000  # units of one hidden layer (keyword only)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # what the job's result must fit in (keyword only)
    max_loss_work: int = MAX_LOSS_WORK  # what the loss builds beyond its inputs on a batch (keyword only)

    @property
    def tensors(self) -> TensorLimits:
        """The limits on the request's tensors (inline data, constant loss inputs), and the job's loss work (which
        submission reads from ``max_loss_work`` itself: ``check_loss_accepts_model``)."""
        return TensorLimits(self.max_tensor_elements, self.max_request_elements, self.max_tensors,
                            max_loss_work=self.max_loss_work)

    @classmethod
    def accepted(cls, **overrides: int) -> TrainingLimits:
        """No size limits: for re-planning a job the server already accepted under its own limits
        (a worker does not know them, and a restarted server's may be lower than they were).

        >>> TrainingLimits.accepted(max_world_size=2).max_samples > 10**18
        True
        """
        unbounded = {f.name: sys.maxsize for f in dataclasses.fields(cls)}
        return cls(**{**unbounded, **overrides})


@dataclass(frozen=True)
class TrainingConfig:
    """Where jobs live and how many may run (``training/_manager.py``); see ``lossd serve --help``."""

    data_dir: Path = Path(".lossd")
    max_jobs: int = 2
    max_queued_jobs: int = 32
    limits: TrainingLimits = field(default_factory=TrainingLimits)
    plugins: str = "none"
    #: HOST:PORT of the c10d TCPStore this server hosts for jobs with ``nodes`` > 1 ("": none).
    rdzv_endpoint: str = ""
    #: Where jobs are stored: "" (SQLite in data_dir) or a postgresql:// URL shared by replicas.
    job_store: str = ""
    #: Seconds a claim on a job lasts unless renewed (renewed every lease_s / 4, at most every second).
    lease_s: float = DEFAULT_LEASE_S
    #: Seconds after its end that an ended job is deleted with its events and parameters (0: never).
    retention_s: float = DEFAULT_RETENTION_S
    #: Times a job whose worker was killed (SIGKILL: the OOM killer) resumes from its checkpoint before it fails.
    max_job_restarts: int = 1
    #: The server's ``--log-format`` and ``--log-level``, which its workers log in too.
    log_format: str = "plain"
    log_level: str = "INFO"


# -- plugins (losses/_plugins.py) --
def plugin_names(setting: str) -> list[str] | None:
    """The plugin names a ``--plugins`` value lists: None for ``all``, [] for ``none``."""
    choice = setting.strip().lower()
    if choice == "all":
        return None
    if choice == "none":
        return []
    return [n.strip() for n in setting.split(",") if n.strip()]
