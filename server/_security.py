"""Who may call the server: the exposure rule, the bearer token, TLS and mutual TLS.

:func:`check_security` turns the server's security settings into a
:class:`Security` (the token's bytes, the TLS credentials) or refuses them
with a :class:`SecurityError` that says what to set, logging nothing (the
entry points call it before logging is configured and torch loads);
:func:`log_warnings` says, once the server starts, what it lets through
(``ServerConfig.security`` does both). :func:`check_exposure` is the one
exposure rule: a server bound beyond loopback (anything but ``127.0.0.0/8``,
``::1`` and ``localhost``) needs authentication — a bearer token, or mutual
TLS (a client CA: every caller shows a certificate it signed) — unless
``--insecure`` says otherwise, loudly. TLS without a client CA encrypts but
authenticates nobody, so it does not count.

>>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("localhost"), is_loopback("0.0.0.0")
(True, True, True, False)
>>> check_security("127.0.0.1").authenticates
False
>>> check_security("0.0.0.0", token="0123456789abcdef-example").authenticates
True
>>> try:
...     check_security("0.0.0.0")
... except SecurityError as e:
...     print(str(e)[:54])
refusing to serve on 0.0.0.0 without authentication: a
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass, field

import grpc

from .._settings import SettingError

__all__ = [
    "MIN_TOKEN_LENGTH",
    "ConfigError",
    "Security",
    "SecurityError",
    "check_exposure",
    "check_security",
    "describe",
    "is_loopback",
    "log_warnings",
    "read_token",
]

log = logging.getLogger("lossd.server")

#: Shortest bearer token accepted: a short secret is a guessable one.
MIN_TOKEN_LENGTH = 16

#: How to configure authentication, for the messages below.
HOW_TO_AUTHENTICATE = (
    "set a bearer token (LOSSD_TOKEN=<secret> or LOSSD_TOKEN_FILE=<file>, --token-file <file>; "
    "clients send `authorization: Bearer <secret>`), or mutual TLS (--tls-cert, --tls-key and "
    "--tls-client-ca; env LOSSD_TLS_CERT, LOSSD_TLS_KEY, LOSSD_TLS_CLIENT_CA); or bind 127.0.0.1; "
    "--insecure (LOSSD_INSECURE=1) serves without authentication anyway (see docs/security.md)"
)


class ConfigError(SettingError):
    """A setting the server refuses to start with (security, concurrency, keepalive); the message
    says what to set. :func:`lossd.server.main` reports it and exits 2."""


class SecurityError(ConfigError):
    """A security setting the server refuses to start with; the message says what to set."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``, their
    IPv4-mapped form); False for anything else, wildcards and other host names included."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False  # a host name may resolve to anything
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class Security:
    """What the server enforces: the token (bytes; never shown), TLS credentials, mTLS."""

    token: bytes | None = field(default=None, repr=False)
    credentials: grpc.ServerCredentials | None = field(default=None, repr=False)
    tls: bool = False
    mutual_tls: bool = False
    insecure: bool = False

    @property
    def authenticates(self) -> bool:
        """Whether every call (health aside) must show a token or a client certificate."""
        return self.token is not None or self.mutual_tls


def _read_file(path: str, setting: str, env: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SecurityError(f"{setting} ({env}): cannot read {path!r}: {e.strerror}") from None


def read_token(token: str | None = None, token_file: str | None = None) -> bytes | None:
    """The bearer token from the setting or from its file (read now, whitespace stripped),
    or None when neither is given. Refuses both at once, an empty or unreadable file,
    a token shorter than :data:`MIN_TOKEN_LENGTH` and one that is not printable ASCII
    without spaces (gRPC metadata could not carry it)."""
    if token and token_file:
        raise SecurityError("token: LOSSD_TOKEN and LOSSD_TOKEN_FILE (--token-file) are both set; set one")
    if token_file:
        data = _read_file(token_file, "--token-file", "LOSSD_TOKEN_FILE")
        source = f"the token file {token_file!r} (--token-file, LOSSD_TOKEN_FILE)"
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            raise SecurityError(f"{source}: the token must be printable ASCII") from None
        if not text:
            raise SecurityError(f"{source} is empty; write the token into it (e.g. `openssl rand -hex 32`)")
    elif token:
        source, text = "LOSSD_TOKEN", token.strip()
    else:
        return None
    if not all(0x21 <= ord(c) <= 0x7E for c in text):
        raise SecurityError(f"{source}: the token must be printable ASCII without spaces")
    if len(text) < MIN_TOKEN_LENGTH:
        raise SecurityError(f"{source}: the token has {len(text)} characters; use at least {MIN_TOKEN_LENGTH} "
                            "random ones (e.g. `openssl rand -hex 32`)")
    return text.encode("ascii")


def _credentials(cert: str | None, key: str | None, client_ca: str | None) -> grpc.ServerCredentials | None:
    if (cert is None) != (key is None):
        raise SecurityError("--tls-cert and --tls-key (LOSSD_TLS_CERT, LOSSD_TLS_KEY) go together")
    if cert is None or key is None:
        if client_ca is not None:
            raise SecurityError("--tls-client-ca (LOSSD_TLS_CLIENT_CA) needs --tls-cert and --tls-key: "
                                "mutual TLS is TLS plus a client certificate check")
        return None
    pair = (_read_file(key, "--tls-key", "LOSSD_TLS_KEY"), _read_file(cert, "--tls-cert", "LOSSD_TLS_CERT"))
    ca = _read_file(client_ca, "--tls-client-ca", "LOSSD_TLS_CLIENT_CA") if client_ca is not None else None
    _check_pem(cert, key, client_ca)
    try:
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
    except Exception as e:  # grpc checks little here; bad PEM surfaces at bind time
        raise SecurityError(f"--tls-cert/--tls-key: {e}") from None


def _check_pem(cert: str, key: str, client_ca: str | None) -> None:
    """Refuse TLS files gRPC would refuse only when it binds the port, after the server has loaded ("could not
    bind", naming no flag): certificates that are not PEM, a key that is not PEM or not the certificate's."""

    def no_password() -> bytes:
        raise ValueError("the key is encrypted")  # gRPC takes no password: never a prompt on the terminal

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL's policy (RSA-1024, SHA-1 signatures) is not gRPC's
    for path, setting, env in ((cert, "--tls-cert", "LOSSD_TLS_CERT"),
                               (client_ca, "--tls-client-ca", "LOSSD_TLS_CLIENT_CA")):
        if path is not None:
            try:
                context.load_verify_locations(cafile=path)
            except (ssl.SSLError, ValueError) as e:
                raise SecurityError(f"{setting} ({env}): {path!r} holds no PEM certificate ({_reason(e)})") from None
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except (ssl.SSLError, ValueError) as e:
        raise SecurityError(f"--tls-key (LOSSD_TLS_KEY): {key!r} is not an unencrypted PEM private key of the "
                            f"--tls-cert certificate ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    """OpenSSL's reason (``KEY_VALUES_MISMATCH``: "key values mismatch"), else what the error says."""
    reason = getattr(e, "reason", None)
    if reason:
        return str(reason).replace("_", " ").lower()
    return "not PEM, or encrypted" if isinstance(e, ssl.SSLError) else str(e)


def check_security(
    host: str,
    *,
    token: str | None = None,
    token_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    insecure: bool = False,
) -> Security:
    """The server's :class:`Security` for binding ``host``, or a :class:`SecurityError`; logs nothing, so that
    the entry points can check it before logging is configured and torch loads (it reads the token and TLS
    files, and imports neither).

    The exposure rule lives here: beyond loopback, no token and no mutual TLS
    refuses to start, unless ``insecure``. A token over plaintext beyond
    loopback is allowed (behind a TLS-terminating proxy, or in a cluster
    network). :func:`log_warnings` says both when the server starts.
    """
    secret = read_token(token, token_file)
    credentials = _credentials(tls_cert, tls_key, tls_client_ca)
    security = Security(token=secret, credentials=credentials, tls=credentials is not None,
                        mutual_tls=tls_client_ca is not None, insecure=insecure)
    check_exposure(host, security, insecure)
    return security


def check_exposure(host: str, security: Security, insecure: bool) -> None:
    """The exposure rule: a :class:`SecurityError` for serving ``host`` beyond loopback with a ``security`` that
    authenticates no caller, unless ``insecure``. (:func:`check_security` applies it; so does ``create_server`` to
    a :class:`Security` it is handed.)

    >>> check_exposure("0.0.0.0", Security(), insecure=True)
    >>> try:
    ...     check_exposure("0.0.0.0", Security(), insecure=False)
    ... except SecurityError as e:
    ...     print(str(e)[:54])
    refusing to serve on 0.0.0.0 without authentication: a
    """
    if not is_loopback(host) and not security.authenticates and not insecure:
        raise SecurityError(f"refusing to serve on {host} without authentication: a server reachable "
                            f"from other machines must check its callers; {HOW_TO_AUTHENTICATE}")


def log_warnings(host: str, security: Security) -> None:
    """Log the warnings of a :class:`Security` that :func:`check_security` let serve on ``host``: beyond loopback,
    no authentication (``--insecure``), or a bearer token over plaintext."""
    if is_loopback(host):
        return
    if not security.authenticates:
        log.warning("WARNING: --insecure: serving on %s WITHOUT AUTHENTICATION: anyone who can reach this "
                    "port can evaluate losses and run training jobs%s", host,
                    "" if security.tls else ", over plaintext")
    elif not security.tls:
        log.warning("serving on %s with a bearer token over plaintext: the token travels in clear; "
                    "terminate TLS in front of the server or set --tls-cert/--tls-key", host)


def describe(security: Security) -> str:
    """One line for the start-up log: what is enforced (never the token).

    >>> describe(Security(token=b"x" * 16, tls=True, mutual_tls=True))
    'TLS, client certificates required (mTLS), bearer token required (health open)'
    """
    parts = ["TLS" if security.tls else "plaintext"]
    if security.mutual_tls:
        parts.append("client certificates required (mTLS)")
    if security.token is not None:
        parts.append("bearer token required (health open)")
    if not security.authenticates:
        parts.append("no authentication" + (" (--insecure)" if security.insecure else ""))
    return ", ".join(parts)
