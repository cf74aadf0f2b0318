"""Training jobs: a regularized training run described as data, run outside the serving path.

``lossd.v1.TrainingService`` (``proto/lossd/v1/training.proto``) is served by
:class:`TrainingService` over a :class:`JobManager`. The pieces, in the order
a job meets them:

- ``_spec``: ``TrainJobRequest`` -> :class:`JobPlan` (every rule of a spec; data built here)
- ``_data``, ``_model``, ``_optim``, ``_metrics``: data sets, models, optimizers/schedules, metrics
- ``_manager``: the queue, worker processes, events, cancel, resume, shutdown
- ``_worker``: the worker process entry point; ``_engine``: the deterministic training loop
- ``_store``: the ``JobStore`` protocol and SQLite (jobs, events, results, leases); ``_pgstore``: PostgreSQL;
  ``_checkpoint``: atomic checkpoints

docs/training.md describes the spec, events, states and the durability design.

>>> from lossd.server.training import BUILTINS
>>> sorted(BUILTINS)
['blobs', 'linear_regression', 'moons', 'rings']
"""

from ..._model import ModelPlan, build_model
from .._limits import TrainingConfig, TrainingLimits
from ._data import BUILTINS, Dataset, make_builtin
from ._engine import Control, run_job
from ._manager import JobManager
from ._service import TrainingService
from ._spec import JobPlan, plan_job
from ._store import JobStore, SQLiteJobStore

__all__ = [
    "BUILTINS",
    "Control",
    "Dataset",
    "JobManager",
    "JobPlan",
    "JobStore",
    "SQLiteJobStore",
    "ModelPlan",
    "TrainingConfig",
    "TrainingLimits",
    "TrainingService",
    "build_model",
    "make_builtin",
    "plan_job",
    "run_job",
]
