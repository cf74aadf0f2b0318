"""Operator plugins: losses added by installed packages, never by clients.

A plugin package registers losses with :func:`~lossd.server.losses.register_loss`
in a module named by an entry point of the group ``lossd.losses``::

    # pyproject.toml of the plugin package
    [project.entry-points."lossd.losses"]
    my_losses = "my_package.losses"

At start the server imports each entry point (``lossd serve --plugins``
chooses which; ``none`` disables them). A plugin is taken whole or refused:
if its import fails or exits (``sys.exit()``), it declares a ``Param`` that the
Param's own rules refuse, one of its losses cannot be described, or any of its
names or aliases clashes with a loss already registered, none of its losses are
added and the server logs why.

>>> [r.name for r in load_plugins(only=["no-such-plugin"])]
[]
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from .._limits import plugin_names
from ._registry import REGISTRY, LossSpec, Registry, check_signature, staging

__all__ = [
    "ENTRY_POINT_GROUP", "PluginResult", "load_plugin_setting", "load_plugins", "missing_plugins", "refused_named",
]

ENTRY_POINT_GROUP = "lossd.losses"

log = logging.getLogger("lossd.server.plugins")

_loaded: dict[str, PluginResult] = {}


@dataclass(frozen=True)
class PluginResult:
    """What loading one entry point did: the losses it added, or why it was refused."""

    name: str
    value: str
    losses: tuple[str, ...] = ()
    error: str = ""


def load_plugins(registry: Registry = REGISTRY, only: Sequence[str] | None = None,
                 vet: Callable[[LossSpec], object] | None = None) -> list[PluginResult]:
    """Load the ``lossd.losses`` entry points (all, or those named in ``only``) into ``registry``.

    A plugin whose import fails (``sys.exit()`` included), whose ``Param`` is invalid (refused when it
    registers: :meth:`Registry.add`), whose loss ``vet`` raises for (the server passes what publishes it in
    ``ListLosses``) or whose name clashes is refused whole and logged by name. Idempotent per process: an
    entry point already loaded is reported, not reloaded.
    """
    results = []
    wanted = set(only) if only is not None else None
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if wanted is not None and ep.name not in wanted:
            continue
        if ep.name in _loaded:
            results.append(_loaded[ep.name])
            continue
        result = _load_one(registry, ep, vet)
        _loaded[ep.name] = result
        results.append(result)
    for missing in sorted((wanted or set()) - {r.name for r in results}):
        log.error("plugin %r is not installed (entry point group %s)", missing, ENTRY_POINT_GROUP)
    return results


def load_plugin_setting(setting: str, registry: Registry = REGISTRY,
                        vet: Callable[[LossSpec], object] | None = None) -> list[PluginResult]:
    """Load the plugins a ``--plugins`` / ``LOSSD_PLUGINS`` value names: ``all``, ``none`` or ``a,b``.

    >>> load_plugin_setting("none")
    []
    """
    return load_plugins(registry, plugin_names(setting), vet)


def refused_named(setting: str, results: Sequence[PluginResult]) -> list[PluginResult]:
    """The plugins that a ``--plugins`` value names explicitly (not ``all``) and that were refused:
    ``lossd serve`` refuses to start with any, as with a name not installed.

    >>> refused_named("a", [PluginResult("a", "m", error="failed to load: x"), PluginResult("b", "n", ("l",))])
    [PluginResult(name='a', value='m', losses=(), error='failed to load: x')]
    >>> refused_named("all", [PluginResult("a", "m", error="failed to load: x")])
    []
    """
    return [r for r in results if r.error] if plugin_names(setting) is not None else []


def missing_plugins(setting: str) -> list[str]:
    """The names a ``--plugins`` value lists that no installed package provides (``all`` and
    ``none`` name nothing); ``lossd serve`` refuses to start with any.

    >>> missing_plugins("none"), missing_plugins("no-such-plugin")
    ([], ['no-such-plugin'])
    """
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(plugin_names(setting) or ()) - installed)


def _load_one(registry: Registry, ep: EntryPoint, vet: Callable[[LossSpec], object] | None = None) -> PluginResult:
    name, value = ep.name, ep.value
    dist = getattr(getattr(ep, "dist", None), "name", None) or name
    try:
        with staging() as staged:
            ep.load()
    except KeyboardInterrupt:
        raise  # a real Ctrl-C while the server starts
    except BaseException as e:  # noqa: BLE001 - a broken plugin (sys.exit() included) must not stop the server
        why = f"{type(e).__name__}({e})" if not isinstance(e, Exception) else str(e)
        log.error("plugin %r (%s) failed to load: %s", name, value, why, exc_info=True)
        return PluginResult(name, value, error=f"failed to load: {why}")
    specs = list(staged)
    for spec in specs:
        try:
            check_signature(spec)
            if vet is not None:
                vet(spec)
        except Exception as e:  # noqa: BLE001 - refused whole, as a clash is
            error = f"refused: loss {spec.name!r} cannot be served: {type(e).__name__}: {e}"
            log.error("plugin %r (%s) %s", name, value, error)
            return PluginResult(name, value, error=error)
    clashes = sorted(n for s in specs for n in (s.name, *s.aliases) if n in registry)
    if clashes:
        error = f"refused: names already registered: {', '.join(clashes)}"
        log.error("plugin %r (%s) %s", name, value, error)
        return PluginResult(name, value, error=error)
    for spec in specs:
        registry.add(dataclasses.replace(spec, source=spec.source or f"plugin {dist} ({value})", inline=False,
                                         plugin=True))
    added = tuple(s.name for s in specs)
    log.info("plugin %r (%s) added losses: %s", name, value, ", ".join(added) or "none")
    return PluginResult(name, value, added)
