"""Connection settings shared by :class:`~lossd.client.Client` and :class:`~lossd.client.AsyncClient`.

Each setting comes from an argument, else from its ``LOSSD_*`` environment
variable, else from the default. Retries and load balancing are not a loop in
the SDK: they are gRPC's own, configured through the channel's service config
(``grpc.service_config``)::

    >>> cfg = ClientConfig.from_env(["127.0.0.1:50051", "127.0.0.1:50052"], timeout=5, environ={})
    >>> cfg.target, cfg.timeout, cfg.tls
    ('ipv4:127.0.0.1:50051,127.0.0.1:50052', 5.0, False)
    >>> sc = cfg.service_config()
    >>> sc["loadBalancingConfig"], sc["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"]
    ([{'round_robin': {}}], ['UNAVAILABLE'])
"""

from __future__ import annotations

import ipaddress
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from .. import __version__
from .._methods import BY_PATH
from .._settings import Setting, parse_bool
from .._wire import DEFAULT_MAX_MESSAGE_BYTES

__all__ = [
    "ClientConfig",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_ATTEMPTS",
    "RETRIED_METHODS",
    "RETRY_TOKENS",
    "ENVIRONMENT",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "check_range",
    "normalize_target",
]

#: Where the SDK connects unless told otherwise (env ``LOSSD_TARGET``).
DEFAULT_TARGET = "127.0.0.1:50051"
#: Default deadline of a call, in seconds (env ``LOSSD_TIMEOUT``; training streams have none).
DEFAULT_TIMEOUT = 60.0
#: gRPC's most attempts of a call: a retry policy's ``maxAttempts`` above it is cut to it.
GRPC_MAX_ATTEMPTS = 5
#: Attempts of an idempotent call that fails UNAVAILABLE (env ``LOSSD_MAX_ATTEMPTS``): gRPC's most.
DEFAULT_MAX_ATTEMPTS = GRPC_MAX_ATTEMPTS
#: A longer deadline is no deadline: gRPC counts deadlines in nanoseconds in a signed 64-bit clock, and one
#: past it (about 7.4e9 s from now) fails every call at once with DEADLINE_EXCEEDED.
MAX_DEADLINE_S = 1e9
#: gRPC's largest message size and keepalive time: both become C ints (bytes, milliseconds).
MAX_MESSAGE_BYTES = 2**31 - 1
MAX_KEEPALIVE_S = (2**31 - 1) / 1000

#: The methods gRPC retries on UNAVAILABLE, as (service, method): the idempotent ones that
#: take one request message (``lossd._methods``, ``Rpc.retried``, says why not streams).
RETRIED_METHODS: tuple[tuple[str, str], ...] = tuple(
    (m.service, m.name) for m in BY_PATH.values() if m.retried
)

#: ``retryThrottling.maxTokens``: gRPC stops retrying once failed attempts outnumber successes
#: by half of it (100). It bounds how many calls in flight on a replica that dies can still
#: move to another one: with 20 tokens, 7 of 16 calls in flight on a killed replica failed
#: (docs/scaling.md). gRPC allows at most 1000.
RETRY_TOKENS = 200

_COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip,
                "deflate": grpc.Compression.Deflate}
_BALANCERS = ("pick_first", "round_robin")


# ---------------------------------------------------------------------------
# The settings table: ClientConfig's fields, the LOSSD_* variables and the CLI's
# connection flags (lossd.client.cli) are all built from SETTINGS, with the Setting
# type and the one boolean parser the server's table uses (lossd._settings). Unlike
# the server's flags, the CLI's default to "unset": an argument, then the variable,
# then the default, resolved in ClientConfig.from_env like the SDK's arguments.


def _parse_timeout(text: str) -> float:
    """Seconds, or ``inf``/``none`` for no deadline.

    >>> _parse_timeout("2.5"), _parse_timeout("inf")
    (2.5, inf)
    """
    return math.inf if text.strip().lower() in ("inf", "none") else float(text)


def _choice(*choices: str) -> Callable[[str], str]:
    """A parser that accepts one of ``choices`` in any case."""

    def parse(text: str) -> str:
        if text.strip().lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text.strip().lower()

    return parse


#: Every client setting: ``ClientConfig`` field, variable, parser, default, help, ``lossd`` flag.
SETTINGS: tuple[Setting[Any], ...] = (
    Setting("target", "LOSSD_TARGET", str, DEFAULT_TARGET,
            "server address host:port, several IP:port separated by commas (balanced round_robin), "
            "or any gRPC target", "--target", metavar="HOST:PORT"),
    Setting("timeout", "LOSSD_TIMEOUT", _parse_timeout, DEFAULT_TIMEOUT,
            "default deadline of a call in seconds (inf: none; training streams have none)", "--timeout",
            metavar="SECONDS"),
    Setting("token", "LOSSD_TOKEN", str, None,
            "bearer token sent as authorization metadata; a flag shows in `ps`: prefer the variable "
            "or --token-file", "--token", metavar="TOKEN"),
    Setting("token_file", "LOSSD_TOKEN_FILE", str, None, "file holding the bearer token", "--token-file",
            metavar="FILE"),
    Setting("tls", "LOSSD_TLS", parse_bool, False, "use TLS with the system's root certificates", "--tls"),
    Setting("ca_file", "LOSSD_CA_FILE", str, None, "PEM CA bundle to verify the server; implies TLS", "--ca-file",
            metavar="PEM"),
    Setting("cert_file", "LOSSD_CERT_FILE", str, None, "PEM client certificate (mutual TLS)", "--cert-file",
            metavar="PEM"),
    Setting("key_file", "LOSSD_KEY_FILE", str, None, "PEM client private key (mutual TLS)", "--key-file",
            metavar="PEM"),
    Setting("server_name", "LOSSD_SERVER_NAME", str, None, "name to verify in the server's certificate",
            "--server-name", metavar="NAME"),
    Setting("compression", "LOSSD_COMPRESSION", _choice(*_COMPRESSION), None,
            f"compress every request: {', '.join(_COMPRESSION)}", "--compression", metavar="NAME"),
    Setting("keepalive_s", "LOSSD_KEEPALIVE_S", float, None,
            "ping an idle connection after this many seconds (above the server's --min-ping-interval)",
            "--keepalive", metavar="SECONDS"),
    Setting("max_message_bytes", "LOSSD_MAX_MESSAGE_BYTES", int, DEFAULT_MAX_MESSAGE_BYTES,
            "largest message sent or received, in bytes", "--max-message-bytes", metavar="BYTES"),
    Setting("max_attempts", "LOSSD_MAX_ATTEMPTS", int, DEFAULT_MAX_ATTEMPTS,
            "attempts of an idempotent call that fails UNAVAILABLE (1: no retries; gRPC caps it at 5)",
            "--max-attempts", metavar="N"),
    Setting("load_balancing", "LOSSD_LOAD_BALANCING", _choice(*_BALANCERS), None,
            "pick_first or round_robin (default round_robin for several addresses or a dns: target)",
            "--load-balancing", metavar="POLICY"),
)
SETTINGS_BY_NAME: dict[str, Setting[Any]] = {s.name: s for s in SETTINGS}

#: Every setting's environment variable.
ENVIRONMENT: dict[str, str] = {s.name: s.env for s in SETTINGS}


def _ip_scheme(address: str) -> str | None:
    """``ipv4``/``ipv6`` for ``1.2.3.4:p`` / ``[::1]:p``; ``None`` for a host name or no port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return None
    return f"ipv{ip.version}"


def normalize_target(target: str | Sequence[str]) -> tuple[str, int]:
    """The gRPC target for one address or several, and how many addresses it names.

    Several addresses (a list, or ``a,b`` without a scheme) must be IP
    literals of one family: they become an ``ipv4:``/``ipv6:`` target, which
    gRPC balances over. A host name that resolves to several addresses is one
    target (``dns:///name:port``).

    >>> normalize_target("localhost:50051")
    ('localhost:50051', 1)
    >>> normalize_target("127.0.0.1:1,127.0.0.1:2")
    ('ipv4:127.0.0.1:1,127.0.0.1:2', 2)
    >>> normalize_target(["[::1]:1", "[::1]:2"])
    ('ipv6:[::1]:1,[::1]:2', 2)
    """
    if isinstance(target, str):
        scheme, sep, rest = target.partition(":")
        if sep and scheme in ("ipv4", "ipv6", "unix", "dns", "unix-abstract", "vsock"):
            return target, rest.count(",") + 1
        addresses = [a.strip() for a in target.split(",") if a.strip()]
    else:
        addresses = [a.strip() for a in target]
    if not addresses:
        raise ValueError("target: no address given")
    for address in addresses:  # gRPC takes a port number modulo 65536: 98813 reached port 33277
        port = address.rpartition(":")[2]
        if ":" in address and re.fullmatch(r"[+-]?\d+", port) and not 0 <= int(port) <= 65535:
            raise ValueError(f"target: port {port} of {address!r} is not in 0-65535")
    if len(addresses) == 1:
        return addresses[0], 1
    schemes = {_ip_scheme(a) for a in addresses}
    if len(schemes) != 1 or None in schemes:
        raise ValueError(
            f"target: several addresses must be IP:port literals of one family (got {addresses}); "
            "for a host name that resolves to several addresses give it once, as dns:///name:port"
        )
    return f"{schemes.pop()}:{','.join(addresses)}", len(addresses)


def _read(path: str | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{setting} ({ENVIRONMENT[setting]}): cannot read {path!r}: {e.strerror}") from None


def _read_pem(path: str | None, setting: str) -> bytes | None:
    """A certificate or key file: PEM (``-----BEGIN``), else a ``ValueError`` naming the setting (gRPC's own
    failure showed as 'no lossd server answers', with an ERROR line of its own)."""
    data = _read(path, setting)
    if data is not None and b"-----BEGIN " not in data:
        raise ValueError(f"{setting} ({ENVIRONMENT[setting]}): {path!r} is not a PEM file (no -----BEGIN line)")
    return data


def _read_token(path: str) -> str:
    data = _read(path, "token_file") or b""
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"token_file (LOSSD_TOKEN_FILE): {path!r} does not hold a printable ASCII token") from None
    if not token:
        raise ValueError(f"token_file (LOSSD_TOKEN_FILE): {path!r} is empty")
    return _printable(token, f"token_file (LOSSD_TOKEN_FILE): {path!r}")


def _printable(token: str, where: str) -> str:
    """``token`` when it is printable ASCII (what gRPC metadata carries), else a ``ValueError`` saying ``where``
    (a control character reached gRPC, which answered INTERNAL: Invalid metadata)."""
    if not all(" " <= c <= "~" for c in token):
        raise ValueError(f"{where}: the token must be printable ASCII")
    return token


def _resolve_token(arguments: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """The bearer token: an argument (``token``, else ``token_file``) wins over the
    environment (``LOSSD_TOKEN``, else ``LOSSD_TOKEN_FILE``); a file is read now."""
    for source in (arguments, given):
        if source.get("token"):
            return _printable(str(source["token"]), "token (LOSSD_TOKEN)")
        if source.get("token_file"):
            return _read_token(str(source["token_file"]))
    return None


def _env_value(setting: str, text: str) -> Any:
    """A setting's value parsed from its environment variable's text; a ``SettingError``
    (a ``ValueError``) names the variable."""
    return SETTINGS_BY_NAME[setting].read(text)


#: The ranges of the numeric settings, one rule each, whatever gave the value (an argument, a
#: ``LOSSD_*`` variable, a ``lossd`` flag): (the value's type, whether a value is inside, the rule).
_RANGES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], bool], str]] = {
    "timeout": (float, lambda v: v > 0, "must be > 0 seconds (inf for no deadline)"),
    "max_attempts": (int, lambda v: v >= 1, "must be >= 1 (1 turns retries off)"),
    "keepalive_s": (float, lambda v: 0 < v <= MAX_KEEPALIVE_S,
                    f"must be > 0 and <= {MAX_KEEPALIVE_S} seconds (gRPC takes whole milliseconds as a C int)"),
    "max_message_bytes": (int, lambda v: 1 <= v <= MAX_MESSAGE_BYTES,
                          f"must be from 1 to {MAX_MESSAGE_BYTES} (gRPC's largest)"),
}


def check_range(setting: str, value: Any) -> Any:
    """``value`` as the setting's type, if inside the setting's range (a setting without one:
    ``value`` as it is); else a ``ValueError`` stating the rule, naming neither the setting nor
    where the value came from: the caller does (:meth:`ClientConfig.from_env` the argument or the
    variable, ``lossd`` the flag).

    >>> check_range("max_attempts", 3), check_range("target", "h:1")
    (3, 'h:1')
    >>> check_range("max_attempts", 0)
    Traceback (most recent call last):
    ...
    ValueError: must be >= 1 (1 turns retries off)
    """
    if setting not in _RANGES:
        return value
    kind, inside, rule = _RANGES[setting]
    number = kind(value)
    if not inside(number):  # NaN is inside no range
        raise ValueError(rule)
    return number


@dataclass(frozen=True)
class ClientConfig:
    """Resolved connection settings; build one with :meth:`from_env`.

    ``timeout`` is the default deadline in seconds (``None``: no deadline);
    ``tls`` is on when asked for or when a CA file or client certificate is
    given; ``token`` is sent as ``authorization: Bearer <token>`` on every
    call (``token_file``: read from that file when the client is made, so
    that the token shows neither in ``ps`` nor in code); ``max_attempts`` is
    how often gRPC tries an idempotent call that fails ``UNAVAILABLE`` (1: no retries); ``load_balancing`` defaults to
    ``round_robin`` when the target names several addresses or is a
    ``dns:`` target (whose name may resolve to several replicas).

    >>> ClientConfig.from_env("10.0.0.7:443", token="s3cret", environ={}).metadata()
    (('authorization', 'Bearer s3cret'),)
    """

    target: str = DEFAULT_TARGET
    timeout: float | None = DEFAULT_TIMEOUT
    token: str | None = field(default=None, repr=False)
    #: Where the token was read from (``token`` holds it), if from a file.
    token_file: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    compression: str | None = None
    keepalive_s: float | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    load_balancing: str | None = None
    #: Number of addresses in ``target``.
    addresses: int = 1
    #: Extra gRPC channel arguments, applied last.
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_env(
        cls,
        target: str | Sequence[str] | None = None,
        *,
        options: Sequence[tuple[str, Any]] = (),
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> ClientConfig:
        """Settings from arguments, else ``LOSSD_*`` variables (:data:`ENVIRONMENT`), else defaults.

        ``settings`` are the keyword arguments of :class:`~lossd.client.Client`
        (``timeout``, ``token``, ``ca_file``, ...; ``None`` means unset).
        ``timeout=math.inf`` (or ``LOSSD_TIMEOUT=inf``) means no deadline.
        ``environ`` defaults to ``os.environ``.

        >>> cfg = ClientConfig.from_env(timeout=5, environ={"LOSSD_TARGET": "10.0.0.7:50051", "LOSSD_TIMEOUT": "9"})
        >>> cfg.target, cfg.timeout
        ('10.0.0.7:50051', 5.0)
        """
        unknown = set(settings) - set(ENVIRONMENT)
        if unknown:
            raise TypeError(f"unknown client settings {sorted(unknown)}; known: {', '.join(ENVIRONMENT)}")
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {setting: settings.get(setting) for setting in ENVIRONMENT}
        given["target"] = target
        from_environment: set[str] = set()
        for setting, value in given.items():
            text = env.get(ENVIRONMENT[setting], "")
            if value is None and text.strip():
                given[setting] = _env_value(setting, text)
                from_environment.add(setting)

        def named(setting: str) -> str:
            """The setting as an error names it: the argument, and the variable too when the value came
            from it (``ca_file (LOSSD_CA_FILE)``)."""
            return f"{setting} ({ENVIRONMENT[setting]})" if setting in from_environment else setting

        def in_range(setting: str, default: Any) -> Any:
            """The setting's value (``default`` when unset), checked; an error names the argument, and
            the variable too when the value came from it (``max_attempts (LOSSD_MAX_ATTEMPTS): ...``)."""
            if given[setting] is None:
                return default
            try:
                return check_range(setting, given[setting])
            except ValueError as e:
                raise ValueError(f"{named(setting)}: {e}, got {given[setting]}") from None

        resolved, addresses = normalize_target(DEFAULT_TARGET if given["target"] is None else given["target"])
        timeout_s = in_range("timeout", DEFAULT_TIMEOUT)
        compression_name = given["compression"]
        if compression_name is not None and compression_name.lower() not in _COMPRESSION:
            raise ValueError(f"compression: {compression_name!r} is not one of {', '.join(_COMPRESSION)}")
        balancer = given["load_balancing"]
        if balancer is not None and balancer.lower() not in _BALANCERS:  # any case, as from its variable
            raise ValueError(f"load_balancing: {balancer!r} is not one of {', '.join(_BALANCERS)}")
        attempts = in_range("max_attempts", DEFAULT_MAX_ATTEMPTS)
        if (given["cert_file"] is None) != (given["key_file"] is None):
            present, absent = ("cert_file", "key_file") if given["key_file"] is None else ("key_file", "cert_file")
            raise ValueError(f"cert_file and key_file go together, for mTLS: {named(present)} is set, {absent} "
                             f"({ENVIRONMENT[absent]}) is not")
        token = _resolve_token(settings, given)
        keepalive = in_range("keepalive_s", None)
        max_bytes = in_range("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        uses_tls = bool(given["tls"]) or given["ca_file"] is not None or given["cert_file"] is not None
        if given["tls"] is False and (given["ca_file"] or given["cert_file"]):
            implies = "ca_file" if given["ca_file"] else "cert_file"
            raise ValueError(f"{named('tls')} is off, which contradicts {named(implies)}: a CA or client "
                             "certificate means TLS")
        return cls(
            target=resolved,
            timeout=None if math.isinf(timeout_s) else timeout_s,
            token=token,
            token_file=given["token_file"],
            tls=uses_tls,
            ca_file=given["ca_file"],
            cert_file=given["cert_file"],
            key_file=given["key_file"],
            server_name=given["server_name"],
            compression=None if compression_name is None else compression_name.lower(),
            keepalive_s=keepalive,
            max_message_bytes=max_bytes,
            max_attempts=attempts,
            load_balancing=None if balancer is None else balancer.lower(),
            addresses=addresses,
            options=tuple(options),
        )

    @property
    def balances_by_default(self) -> bool:
        """Whether ``round_robin`` is the default: several addresses, or a ``dns:`` target.

        >>> ClientConfig.from_env("dns:///lossd-eval:50051", environ={}).balances_by_default
        True
        >>> ClientConfig.from_env("lossd.example:50051", environ={}).balances_by_default
        False
        """
        return self.addresses > 1 or self.target.startswith("dns:")

    def deadline(self, timeout: float | None, default: bool = True) -> float | None:
        """A call's deadline in seconds: ``timeout`` when given (``math.inf``, or over
        :data:`MAX_DEADLINE_S`: none), else the client's default for calls that take one
        (``default``), else none.

        >>> cfg = ClientConfig(timeout=60.0)
        >>> cfg.deadline(None), cfg.deadline(5), cfg.deadline(float("inf")), cfg.deadline(None, default=False)
        (60.0, 5.0, None, None)
        >>> cfg.deadline(1e10)  # past gRPC's clock: none
        >>> cfg.deadline(0)
        Traceback (most recent call last):
        ...
        ValueError: timeout: must be > 0 seconds (inf for no deadline), got 0
        """
        if timeout is None:
            timeout = self.timeout if default else None
        elif not (type(timeout) is float and 0 < timeout < math.inf):  # the client's own rule: 0, NaN, "5" refused
            _, inside, rule = _RANGES["timeout"]
            if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not inside(timeout):
                raise ValueError(f"timeout: {rule}, got {timeout!r}")
            timeout = float(timeout)
        return None if timeout is None or timeout > MAX_DEADLINE_S else timeout

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call: the bearer token, when set."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config: retry policy for :data:`RETRIED_METHODS`, load balancing.

        ``retryThrottling`` stops retrying once failed attempts outnumber
        successful calls by 100 (a token bucket of :data:`RETRY_TOKENS`, 200,
        refilled one token per success), so an outage does not multiply the load
        on a server that is coming back; retries resume as calls succeed.
        Below that, every call in flight on a replica that dies moves on.
        """
        config: dict[str, Any] = {}
        balancer = self.load_balancing or ("round_robin" if self.balances_by_default else None)
        if balancer:
            config["loadBalancingConfig"] = [{balancer: {}}]
        if balancer == "round_robin":
            # Client-side health checking: each server's grpc.health.v1 Watch stream reports its
            # state, and round_robin skips one that is NOT_SERVING (a draining lossd) instead of
            # sending it calls it would refuse. A server without a health service counts as healthy.
            config["healthCheckConfig"] = {"serviceName": ""}
        if self.max_attempts > 1:
            config["methodConfig"] = [{
                "name": [{"service": s, "method": m} for s, m in RETRIED_METHODS],
                "retryPolicy": {
                    "maxAttempts": min(self.max_attempts, GRPC_MAX_ATTEMPTS),
                    "initialBackoff": "0.1s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }]
            config["retryThrottling"] = {"maxTokens": RETRY_TOKENS, "tokenRatio": 1.0}
        return config

    def channel_options(self) -> list[tuple[str, Any]]:
        """gRPC channel arguments: message sizes, service config, keepalive, TLS name, extras.

        >>> dict(ClientConfig(keepalive_s=30).channel_options())["grpc.keepalive_time_ms"]
        30000
        """
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.primary_user_agent", f"lossd-python/{__version__}"),
            ("grpc.enable_retries", 1 if self.max_attempts > 1 else 0),
            # gRPC retries a call only while it still holds the request: by default 256 KiB, so a
            # larger EvaluateLoss lost with its replica failed instead of moving to another one.
            # Measured at 10^7 elements: no extra peak memory in the client.
            ("grpc.per_rpc_retry_buffer_size", self.max_message_bytes),
            ("grpc.service_config", json.dumps(self.service_config())),
            # Ours, not one a DNS TXT record might carry.
            ("grpc.service_config_disable_resolution", 1),
        ]
        if self.keepalive_s is not None:
            options += [
                ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        # gRPC keeps the first of two arguments with one name: drop ours where the caller set one.
        overridden = {name for name, _ in self.options}
        return [*(o for o in options if o[0] not in overridden), *self.options]

    def channel_compression(self) -> grpc.Compression | None:
        """The compression of every request, or ``None`` for gRPC's default (none)."""
        return None if self.compression is None else _COMPRESSION[self.compression]

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (CA file or system roots; client certificate for mTLS), or ``None``."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.ca_file, "ca_file"),
            private_key=_read_pem(self.key_file, "key_file"),
            certificate_chain=_read_pem(self.cert_file, "cert_file"),
        )
