"""The server's settings, declared once: :data:`SETTINGS` builds :class:`ServerConfig` (each field
read from its ``LOSSD_*`` variable), the ``lossd serve`` flags (:func:`build_parser`; the help of
each ends with its variable and default, generated) and the hints refusals give
(:meth:`lossd._settings.Setting.hint`).

A variable whose text does not parse, or whose value is outside the setting's range (each setting's
parser holds its range: a port 0..65535, a count >= 1, ...), refuses the start (``lossd serve`` exits 2
with one line naming the variable; a flag's refusal names the flag and its variable); booleans take
``1/0``, ``true/false``, ``yes/no``, ``on/off`` in any case::

    >>> ServerConfig.from_env({"LOSSD_REFLECTION": "off", "LOSSD_PORT": "0"}).reflection
    False
    >>> ServerConfig.from_env({"LOSSD_MALLOC_TUNING": "sometimes"})
    Traceback (most recent call last):
    ...
    lossd._settings.SettingError: LOSSD_MALLOC_TUNING='sometimes': not a boolean; use 1/0, true/false, yes/no or on/off
    >>> ServerConfig.from_env({"LOSSD_PORT": "70000"})
    Traceback (most recent call last):
    ...
    lossd._settings.SettingError: LOSSD_PORT='70000': must be a whole number from 0 to 65535 (0 picks a free one)
    >>> SETTING["max_terms"].hint
    '--max-terms, env LOSSD_MAX_TERMS'

To add a setting: one :class:`~lossd._settings.Setting` in :data:`SETTINGS`, one field in
:class:`ServerConfig` (its type; the value comes from the table), one row in the README's
Configuration table (a test checks both).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn

from .._settings import (
    Setting,
    SettingError,
    add_flags,
    first_line,
    float_in,
    int_in,
    optional,
    parse_bool,
    parse_endpoint,
)
from .._wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_ELEMENTS,
    DEFAULT_MAX_TENSOR_ELEMENTS,
    DEFAULT_MAX_TENSORS,
    DEFAULT_MAX_TERMS,
    MAX_LOSS_WORK,
    TensorLimits,
)
from ._connections import (
    DEFAULT_KEEPALIVE_TIME_S,
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MIN_PING_INTERVAL_S,
    HEALTH_HEADROOM,
)
from ._limits import (
    DEFAULT_BATCH_WINDOW_US,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_RETENTION_S,
    MAX_ITEMS,
    BatchLimits,
    TrainingConfig,
    TrainingLimits,
    plugin_names,
)
from ._logging import LOG_FORMATS, parse_log_format, parse_log_level, say_line
from ._security import Security, check_security, log_warnings

__all__ = ["GROUPS", "SETTING", "SETTINGS", "ServerConfig", "build_parser", "config_from_args", "read_command_line"]

_SECURITY = "security"
_CONNECTIONS = "concurrency and connections"

#: Descriptions of the flag groups of ``lossd serve --help``.
GROUPS = {
    _SECURITY: "who may call (docs/security.md). A server bound beyond loopback refuses to start without "
    "a bearer token or mutual TLS, unless --insecure. The token itself comes from the environment "
    "(LOSSD_TOKEN) or a file, never from a flag: arguments show in `ps`.",
    _CONNECTIONS: "server-wide limits on calls in flight (health checks exempt) and HTTP/2 keepalive",
}

_limits = TrainingLimits()


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds, or one with a unit s, m, h or d; finite, >= 0.

    >>> parse_duration("30d"), parse_duration("90"), parse_duration("1.5h")
    (2592000.0, 90.0, 5400.0)
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        raise ValueError("not a duration; give seconds, or a number with s, m, h or d (e.g. 30d)") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError("must be a finite duration >= 0 (0: keep ended jobs)")
    return seconds


# -- the range of each number (a value outside refuses the start, naming the variable or the flag) --

#: gRPC's integer arguments are C ints: a larger value raises OverflowError when the server is built.
GRPC_INT_MAX = 2**31 - 1
#: Any count that must be at least one: threads, jobs, most elements, items, bytes, ...
_at_least_one = int_in(1)
_count_or_zero = int_in(0)
_port = int_in(0, 65535, "0 picks a free one")
#: A count of a request's map or repeated field (terms, tensors): the wire's own cap on every such field
#: (MAX_ITEMS) refuses more first, so a larger setting would never apply.
_wire_count = int_in(1, MAX_ITEMS, "the cap on any repeated field or map of a request")
#: A limit on calls in flight: both limits and HEALTH_HEADROOM make gRPC's max_concurrent_streams.
_calls_in_flight = int_in(1, (GRPC_INT_MAX - HEALTH_HEADROOM) // 2)
#: gRPC takes keepalive times in whole milliseconds, a C int.
_keepalive_seconds = float_in(0.001, GRPC_INT_MAX / 1000, unit="seconds")
#: The most ``--max-loss-work`` may be: 2^40 elements, 4 TiB in float32, and a loss's graph holds a few tensors
#: of the size counted, so no one machine builds that much; a higher limit would refuse nothing a server could
#: build and only turn the check off (10^20 did). A request can still ask for more, so the check still refuses:
#: the largest message (2^31 - 1 bytes) carries an input and a target of nearly 2^28 float32 rows, whose (2N)²
#: similarities in nt_xent_loss count nearly 2^58. Counts stay far inside int64 (torch's sizes): an objective's
#: 1024 terms at the limit count 2^50 together.
MAX_LOSS_WORK_CEILING = 1 << 40
_loss_work = int_in(1, MAX_LOSS_WORK_CEILING, "2^40, 4 TiB of float32: more than one machine holds")


def parse_host(text: str) -> str:
    """``--host``: the address to bind, not empty and without spaces or control characters.

    >>> parse_host("0.0.0.0"), parse_host("::1")
    ('0.0.0.0', '::1')
    >>> parse_host("")
    Traceback (most recent call last):
    ...
    ValueError: must not be empty: 127.0.0.1 (this machine only), 0.0.0.0 (every IPv4 interface) or a host name
    """
    if not text:
        raise ValueError("must not be empty: 127.0.0.1 (this machine only), 0.0.0.0 (every IPv4 interface) "
                         "or a host name")
    if not text.isprintable() or " " in text:
        raise ValueError("must not hold spaces or control characters")
    return text


def parse_plugins(text: str) -> str:
    """``--plugins``: ``all``, ``none`` or names separated by commas; one that names nothing (an empty variable,
    ``","``) is refused rather than loading no plugin without a word.

    >>> parse_plugins("all"), parse_plugins("a, b")
    ('all', 'a, b')
    >>> parse_plugins(" , ")
    Traceback (most recent call last):
    ...
    ValueError: names no plugin: give all, none, or names separated by commas
    """
    if plugin_names(text) == [] and text.strip().lower() != "none":  # the loader's own reading of the value
        raise ValueError("names no plugin: give all, none, or names separated by commas")
    return text


#: Every server setting, in the order ``lossd serve --help`` lists them.
SETTINGS: tuple[Setting[Any], ...] = (
    Setting("host", "LOSSD_HOST", parse_host, "127.0.0.1", "address to bind", "--host"),
    Setting("port", "LOSSD_PORT", _port, 50051, "port; 0 picks a free one", "--port"),
    Setting("device", "LOSSD_DEVICE", str, "auto", "torch device: auto, cpu, cuda, cuda:1", "--device"),
    Setting("workers", "LOSSD_WORKERS", _at_least_one, min(4, os.cpu_count() or 1), "evaluation threads", "--workers"),
    Setting("max_message_bytes", "LOSSD_MAX_MESSAGE_BYTES", int_in(1, GRPC_INT_MAX), DEFAULT_MAX_MESSAGE_BYTES,
            "gRPC message size limit, both ways", "--max-message-bytes"),
    Setting("max_tensor_elements", "LOSSD_MAX_TENSOR_ELEMENTS", _at_least_one, DEFAULT_MAX_TENSOR_ELEMENTS,
            "most elements in one tensor", "--max-tensor-elements"),
    Setting("max_request_elements", "LOSSD_MAX_REQUEST_ELEMENTS", _at_least_one, DEFAULT_MAX_REQUEST_ELEMENTS,
            "most elements in all the tensors of one request", "--max-request-elements"),
    Setting("max_tensors", "LOSSD_MAX_TENSORS", _wire_count, DEFAULT_MAX_TENSORS,
            "most tensors in one request: inputs, parameters, grad_output; a TrainJob's inline data and "
            "constant loss inputs", "--max-tensors"),
    Setting("max_terms", "LOSSD_MAX_TERMS", _wire_count, DEFAULT_MAX_TERMS, "most terms in one composite objective",
            "--max-terms"),
    Setting("max_loss_work", "LOSSD_MAX_LOSS_WORK", _loss_work, MAX_LOSS_WORK,
            "most elements a call's losses may build beyond their inputs (a similarity matrix, a lattice, a "
            "broadcast; an objective's terms together; a TrainJob's loss on a batch or the validation split), "
            "counted from the shapes before any loss runs; at most 2^40 (1099511627776): 4 TiB of float32, more "
            "than one machine holds, so a higher limit would only turn the check off", "--max-loss-work"),
    # -- EvaluateLossBatch and dynamic batching (server/rpc/_batch.py, _batching.py; docs/performance.md) --
    Setting("max_batch_items", "LOSSD_MAX_BATCH_ITEMS", _at_least_one, DEFAULT_MAX_BATCH_ITEMS,
            "most items in one EvaluateLossBatch", "--max-batch-items"),
    Setting("max_batch_bytes", "LOSSD_MAX_BATCH_BYTES", _at_least_one, DEFAULT_MAX_BATCH_BYTES,
            "most tensor bytes in one EvaluateLossBatch, all items together", "--max-batch-bytes"),
    Setting("batch_window_us", "LOSSD_BATCH_WINDOW_US", int_in(0, note="0 turns it off"), DEFAULT_BATCH_WINDOW_US,
            "microseconds a small EvaluateLoss call of a vectorized loss that finds compatible calls in flight "
            "may wait for compatible ones to be evaluated with them (dynamic batching); 0 turns it off",
            "--batch-window-us", metavar="US"),
    Setting("reflection", "LOSSD_REFLECTION", parse_bool, True, "turn off server reflection", "--no-reflection"),
    Setting("grace_s", "LOSSD_GRACE_S", float_in(0, unit="seconds"), 10.0,
            "seconds to drain in-flight calls on shutdown", "--grace"),
    Setting("plugins", "LOSSD_PLUGINS", parse_plugins, "all",
            "loss plugins (entry point group lossd.losses) to load: all, none, or a comma-separated list of names",
            "--plugins"),
    # glibc malloc keeps freed large buffers for reuse (lossd._malloc); applied by main() only.
    Setting("malloc_tuning", "LOSSD_MALLOC_TUNING", parse_bool, True,
            "keep glibc's default malloc behaviour, which returns large freed buffers to the kernel; "
            "see docs/performance.md", "--no-malloc-tuning"),
    Setting("data_dir", "LOSSD_DATA_DIR", str, ".lossd",
            "folder for training jobs: SQLite store and checkpoints", "--data-dir"),
    Setting("job_store", "LOSSD_JOB_STORE", str, "",
            "where training jobs are stored: unset, SQLite in --data-dir; postgresql://USER:PASSWORD@HOST/DB for "
            "a database that several replicas share (needs lossd[postgres]; docs/scaling.md); give a password "
            "through the variable, not the flag (arguments show in `ps`); it is masked in every message",
            "--job-store", metavar="URL"),
    Setting("job_lease_s", "LOSSD_JOB_LEASE_S", float_in(0, above=True, unit="seconds"), DEFAULT_LEASE_S,
            "seconds a replica's claim on a running job lasts without renewal: a dead replica's jobs resume "
            "elsewhere after about this long", "--job-lease-s"),
    Setting("job_retention", "LOSSD_JOB_RETENTION", parse_duration, DEFAULT_RETENTION_S,
            "delete ended jobs with their events and parameters this long after they ended: seconds, or a "
            "number with s, m, h or d (30d); 0 keeps them", "--job-retention", metavar="DURATION"),
    Setting("max_jobs", "LOSSD_MAX_JOBS", _at_least_one, max(1, (os.cpu_count() or 2) // 2),
            "training jobs running at once", "--max-jobs"),
    Setting("max_queued_jobs", "LOSSD_MAX_QUEUED_JOBS", int_in(0, note="0: none waits"), 32,
            "training jobs waiting for a slot", "--max-queued-jobs"),
    Setting("max_epochs", "LOSSD_MAX_EPOCHS", _at_least_one, _limits.max_epochs, "most epochs per job", "--max-epochs"),
    Setting("max_steps", "LOSSD_MAX_STEPS", _at_least_one, _limits.max_steps, "most optimizer steps per job",
            "--max-steps"),
    Setting("max_parameters", "LOSSD_MAX_PARAMETERS", _at_least_one, _limits.max_parameters,
            "largest model, in parameters", "--max-parameters"),
    Setting("max_samples", "LOSSD_MAX_SAMPLES", _at_least_one, _limits.max_samples,
            "largest training data set, in samples", "--max-samples"),
    Setting("max_world_size", "LOSSD_MAX_WORLD_SIZE", _at_least_one, _limits.max_world_size,
            "most data-parallel processes (world_size) per training job", "--max-world-size"),
    Setting("max_classes", "LOSSD_MAX_CLASSES", _at_least_one, _limits.max_classes,
            "most classes in a training job's classification data", "--max-classes"),
    Setting("max_layers", "LOSSD_MAX_LAYERS", _at_least_one, _limits.max_layers,
            "most hidden layers of a training job's MLP", "--max-layers"),
    Setting("max_layer_width", "LOSSD_MAX_LAYER_WIDTH", _at_least_one, _limits.max_layer_width,
            "most units in one hidden layer of a training job's MLP", "--max-layer-width"),
    Setting("max_job_restarts", "LOSSD_MAX_JOB_RESTARTS", _count_or_zero, 1,
            "times a job whose worker process was killed (SIGKILL, e.g. the OOM killer, or with its "
            "forkserver) resumes from its checkpoint before it fails", "--max-job-restarts"),
    Setting("rdzv_endpoint", "LOSSD_RDZV_ENDPOINT", parse_endpoint, "",
            "host the rendezvous (c10d TCPStore) that other machines join for training jobs with nodes > 1 "
            "(`lossd join`); unauthenticated: a trusted network only", "--rdzv-endpoint", metavar="HOST:PORT"),
    Setting("metrics_port", "LOSSD_METRICS_PORT", optional(_port), None,
            "serve Prometheus metrics on this HTTP port (same host as gRPC); needs lossd[metrics]",
            "--metrics-port"),
    Setting("log_format", "LOSSD_LOG_FORMAT", parse_log_format, "plain",
            "plain text, or json: one JSON object per line and an access line per RPC", "--log-format",
            choices=LOG_FORMATS),
    Setting("log_level", "LOSSD_LOG_LEVEL", parse_log_level, "INFO", "Python logging level", "--log-level"),
    # -- security (server/_security.py; docs/security.md) --
    Setting("token", "LOSSD_TOKEN", optional(str), None,
            "bearer token every call but health must carry; environment only: a flag would show it in `ps`",
            group=_SECURITY),
    Setting("token_file", "LOSSD_TOKEN_FILE", optional(str), None,
            "file holding the bearer token that every call but health must send as "
            "`authorization: Bearer <token>`; read at start (or the token itself in LOSSD_TOKEN)",
            "--token-file", group=_SECURITY, metavar="FILE"),
    Setting("tls_cert", "LOSSD_TLS_CERT", optional(str), None, "serve TLS with this certificate chain",
            "--tls-cert", group=_SECURITY, metavar="PEM"),
    Setting("tls_key", "LOSSD_TLS_KEY", optional(str), None, "private key of --tls-cert", "--tls-key",
            group=_SECURITY, metavar="PEM"),
    Setting("tls_client_ca", "LOSSD_TLS_CLIENT_CA", optional(str), None,
            "require client certificates signed by this CA: mutual TLS", "--tls-client-ca", group=_SECURITY,
            metavar="PEM"),
    Setting("insecure", "LOSSD_INSECURE", parse_bool, False,
            "serve beyond loopback without authentication; logged as a warning", "--insecure", group=_SECURITY),
    # -- concurrency and connections (server/interceptors/_concurrency.py, server/_connections.py) --
    Setting("max_concurrent_rpcs", "LOSSD_MAX_CONCURRENT_RPCS", _calls_in_flight, DEFAULT_MAX_CONCURRENT_RPCS,
            "unary calls in flight at once, server-wide; more are refused with RESOURCE_EXHAUSTED; health "
            "checks are exempt", "--max-concurrent-rpcs", group=_CONNECTIONS, metavar="N"),
    Setting("max_concurrent_streams", "LOSSD_MAX_CONCURRENT_STREAMS", _calls_in_flight, DEFAULT_MAX_CONCURRENT_STREAMS,
            "streaming calls open at once (EvaluateLossStream, TrainJob, WatchJob, server reflection), server-wide",
            "--max-concurrent-streams", group=_CONNECTIONS, metavar="N"),
    Setting("keepalive_time_s", "LOSSD_KEEPALIVE_TIME_S", _keepalive_seconds, DEFAULT_KEEPALIVE_TIME_S,
            "ping a connection after this many idle seconds, to find dead peers", "--keepalive-time",
            group=_CONNECTIONS, metavar="S"),
    Setting("keepalive_timeout_s", "LOSSD_KEEPALIVE_TIMEOUT_S", _keepalive_seconds, DEFAULT_KEEPALIVE_TIMEOUT_S,
            "drop a connection whose ping is not answered within this many seconds", "--keepalive-timeout",
            group=_CONNECTIONS, metavar="S"),
    Setting("min_ping_interval_s", "LOSSD_MIN_PING_INTERVAL_S", _keepalive_seconds, DEFAULT_MIN_PING_INTERVAL_S,
            "accept client keepalive pings this often at most; clients that ping more often are disconnected "
            "(GOAWAY too_many_pings)", "--min-ping-interval", group=_CONNECTIONS, metavar="S"),
)

#: The settings by name.
SETTING: dict[str, Setting[Any]] = {s.name: s for s in SETTINGS}
_BY_FLAG: dict[str, Setting[Any]] = {s.flag: s for s in SETTINGS if s.flag}


def _from_table(name: str, **kwargs: Any) -> Any:
    """A :class:`ServerConfig` field whose default is read from setting ``name``'s variable each time
    a config is made (``SettingError`` naming the variable when it does not parse)."""
    setting = SETTING[name]
    return field(default_factory=setting.from_env, **kwargs)


def _read(setting: Setting[Any], value: Any) -> Any:
    """``value``, given in code for ``setting``, as its parser reads its text (see ``ServerConfig``)."""
    if value is None:  # not given: from its variable, else the default
        return setting.from_env()
    if setting.is_switch:
        if type(value).__name__ not in ("bool", "bool_") and value not in (0, 1):  # (numpy's bool too)
            raise ValueError("must be true or false")
        return bool(value)
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise ValueError("must not be a bool")
    if setting.name == "log_level" and isinstance(value, int):
        value = logging.getLevelName(value)  # logging.DEBUG -> "DEBUG"; an unnamed number is refused below
    elif isinstance(value, float) and value.is_integer() and isinstance(setting.default, int):
        value = int(value)  # workers=2.0
    return setting.parse(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


@dataclass
class ServerConfig:
    """Server settings (see :data:`SETTINGS`); a field not given comes from its ``LOSSD_*`` variable."""

    host: str = _from_table("host")
    port: int = _from_table("port")
    device: str = _from_table("device")
    workers: int = _from_table("workers")
    max_message_bytes: int = _from_table("max_message_bytes")
    max_tensor_elements: int = _from_table("max_tensor_elements")
    max_request_elements: int = _from_table("max_request_elements")
    max_tensors: int = _from_table("max_tensors")
    max_terms: int = _from_table("max_terms")
    max_loss_work: int = _from_table("max_loss_work")
    max_batch_items: int = _from_table("max_batch_items")
    max_batch_bytes: int = _from_table("max_batch_bytes")
    batch_window_us: int = _from_table("batch_window_us")
    reflection: bool = _from_table("reflection")
    grace_s: float = _from_table("grace_s")
    plugins: str = _from_table("plugins")
    malloc_tuning: bool = _from_table("malloc_tuning")
    metrics_port: int | None = _from_table("metrics_port")
    log_format: str = _from_table("log_format")
    log_level: str = _from_table("log_level")
    data_dir: str = _from_table("data_dir")
    max_jobs: int = _from_table("max_jobs")
    max_queued_jobs: int = _from_table("max_queued_jobs")
    max_epochs: int = _from_table("max_epochs")
    max_steps: int = _from_table("max_steps")
    max_parameters: int = _from_table("max_parameters")
    max_samples: int = _from_table("max_samples")
    max_world_size: int = _from_table("max_world_size")
    max_classes: int = _from_table("max_classes")
    max_layers: int = _from_table("max_layers")
    max_layer_width: int = _from_table("max_layer_width")
    max_job_restarts: int = _from_table("max_job_restarts")
    rdzv_endpoint: str = _from_table("rdzv_endpoint")
    job_store: str = _from_table("job_store", repr=False)  # may hold a password: never shown
    job_lease_s: float = _from_table("job_lease_s")
    job_retention: float = _from_table("job_retention")
    token: str | None = _from_table("token", repr=False)  # never shown
    token_file: str | None = _from_table("token_file")
    tls_cert: str | None = _from_table("tls_cert")
    tls_key: str | None = _from_table("tls_key")
    tls_client_ca: str | None = _from_table("tls_client_ca")
    insecure: bool = _from_table("insecure")
    max_concurrent_rpcs: int = _from_table("max_concurrent_rpcs")
    max_concurrent_streams: int = _from_table("max_concurrent_streams")
    keepalive_time_s: float = _from_table("keepalive_time_s")
    keepalive_timeout_s: float = _from_table("keepalive_timeout_s")
    min_ping_interval_s: float = _from_table("min_ping_interval_s")

    def __post_init__(self) -> None:
        """Check every field by its setting's own rule and keep what that rule reads, as for a flag or a variable:
        a value given in code is refused naming the field, where it reached gRPC or the limits unchecked
        (``max_concurrent_rpcs=2**31`` was an ``OverflowError`` when the server was built; ``max_message_bytes=0``
        a server that took no call). ``None`` is not given (its variable, else the default); a switch takes a
        bool (or 0 and 1), a whole number an integral float, ``log_level`` logging's numbers (``logging.DEBUG``).

        >>> ServerConfig(max_message_bytes=0)
        Traceback (most recent call last):
        ...
        lossd._settings.SettingError: ServerConfig.max_message_bytes=0: must be a whole number from 1 to 2147483647 \
(--max-message-bytes, env LOSSD_MAX_MESSAGE_BYTES)
        >>> c = ServerConfig(log_level=10, log_format="JSON", job_retention="30d", workers=2.0, insecure=0)
        >>> c.log_level, c.log_format, c.job_retention, c.workers, c.insecure
        ('DEBUG', 'json', 2592000.0, 2, False)
        """
        hidden = {f.name for f in fields(self) if not f.repr}  # a token, a URL with a password
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            try:
                setattr(self, setting.name, _read(setting, value))
            except (ValueError, TypeError) as e:
                reason = first_line(e)
                shown = "" if setting.name in hidden else f"={value!r}"
                raise SettingError(f"ServerConfig.{setting.name}{shown}: {reason} ({setting.hint})") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **given: Any) -> ServerConfig:
        """A config from ``environ`` (not ``os.environ``), with ``given`` fields as they are."""
        values = {s.name: s.from_env(environ) for s in SETTINGS if s.name not in given}
        return cls(**values, **given)

    def tensor_limits(self) -> TensorLimits:
        """The size limits on one request's tensors, and on what its losses build beyond them."""
        return TensorLimits(self.max_tensor_elements, self.max_request_elements, self.max_tensors, self.max_terms,
                            self.max_loss_work)

    def batch_limits(self) -> BatchLimits:
        """The limits on one EvaluateLossBatch."""
        return BatchLimits(self.max_batch_items, self.max_batch_bytes)

    def training(self) -> TrainingConfig:
        """The training part of the settings."""
        limits = TrainingLimits(self.max_epochs, self.max_steps, self.max_parameters, self.max_samples,
                                self.max_tensor_elements, self.max_request_elements, self.max_tensors,
                                max_world_size=self.max_world_size, max_classes=self.max_classes,
                                max_layers=self.max_layers, max_layer_width=self.max_layer_width,
                                max_message_bytes=self.max_message_bytes, max_loss_work=self.max_loss_work)
        return TrainingConfig(Path(self.data_dir), self.max_jobs, self.max_queued_jobs, limits, self.plugins,
                              rdzv_endpoint=self.rdzv_endpoint, job_store=self.job_store, lease_s=self.job_lease_s,
                              retention_s=self.job_retention, max_job_restarts=self.max_job_restarts,
                              log_format=self.log_format, log_level=self.log_level)

    def check_security(self) -> Security:
        """The security part, checked (the exposure rule; the token and TLS files read), logging nothing; raises
        :class:`SecurityError`."""
        return check_security(self.host, token=self.token, token_file=self.token_file, tls_cert=self.tls_cert,
                              tls_key=self.tls_key, tls_client_ca=self.tls_client_ca, insecure=self.insecure)

    def security(self) -> Security:
        """:meth:`check_security`, its warnings logged (``--insecure``, a token over plaintext)."""
        security = self.check_security()
        log_warnings(self.host, security)
        return security


class _ServeParser(argparse.ArgumentParser):
    """``lossd serve``'s parser: a refused argument is one line, no usage, as every refusal to start; a
    flag's line names its variable too (``argument --port (env LOSSD_PORT): '70000': must be ...``)."""

    def error(self, message: str) -> NoReturn:
        flag = re.match(r"argument (--[\w-]+): ", message)
        setting = _BY_FLAG.get(flag.group(1)) if flag else None
        if flag and setting is not None:
            message = f"argument {setting.flag} (env {setting.env}): {message[flag.end():]}"
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag_type(setting: Setting[Any]) -> Callable[[str], Any]:
    """An argparse ``type``: the setting's own parser, its reason in argparse's error."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except (ValueError, TypeError) as e:
            reason = first_line(e)
            raise argparse.ArgumentTypeError(f"{text!r}: {reason}") from None

    parse.__name__ = getattr(setting.parse, "__name__", "value")
    return parse


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``lossd serve``, one per setting with a flag; defaults come from ``LOSSD_*``
    variables (``SettingError`` naming the variable when one does not parse); a flag's value is read by
    its setting's parser, and a refused one exits 2 with one line naming the flag."""
    parser = parser or _ServeParser(prog="lossd serve", description="Run the lossd gRPC server.")
    defaults = {s.name: s.from_env() for s in SETTINGS if s.flag is not None}  # SettingError naming the variable
    flags = [s if s.is_switch else replace(s, parse=_flag_type(s)) for s in SETTINGS]
    add_flags(parser, flags, defaults=defaults, groups=GROUPS)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The config of parsed ``lossd serve`` arguments (settings without a flag: from the environment)."""
    return ServerConfig(**{f.name: getattr(args, f.name) for f in fields(ServerConfig) if hasattr(args, f.name)})


def read_command_line(argv: Sequence[str] | None = None) -> tuple[ServerConfig, Security] | None:
    """The config of ``lossd serve``'s arguments and ``LOSSD_*`` variables and its security, read and checked
    before the server (and torch) loads: the entry points call this first, and hand both to
    :func:`~._app.run` (the token file is read once). A refused flag exits 2 here, with one line, and
    ``--help`` 0 (argparse); a variable that does not parse, or a security setting refused
    (:meth:`ServerConfig.check_security`: the exposure rule, a token or TLS file), is one line on stderr and
    ``None`` (exit 2) — JSON with ``--log-format json``, or with ``LOSSD_LOG_FORMAT=json`` before the flags are
    read. Nothing is logged here: the warnings of a security let through are logged once the server starts."""
    log_format = "plain"
    with contextlib.suppress(ValueError):  # a container's bad LOSSD_* value is read with the flags
        log_format = parse_log_format(os.environ.get(SETTING["log_format"].env, log_format))
    try:
        # Every setting has a flag but the token, which comes from LOSSD_TOKEN only (arguments show in `ps`).
        args = build_parser().parse_args(argv)
        log_format = getattr(args, "log_format", log_format)
        config = config_from_args(args)
        return config, config.check_security()
    except SettingError as e:  # SecurityError too
        say_line(f"lossd serve: error: {e}", log_format, logging.ERROR)
        return None
