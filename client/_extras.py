"""Optional dependencies of the SDK: import one, or say which pip command brings it.

``lossd`` is installed from its clone (``pip install .``; the package is not on
PyPI), so each hint names a command that works as written: the module's own
package, or the clone's extra.

>>> import_extra("json", "the example").__name__
'json'
>>> import_extra("no_such_module_xyz", "plotting", "plot")   # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lossd.client._extras.MissingExtra: plotting needs no_such_module_xyz, which is not installed: pip install matplotlib ...
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EXTRAS", "MissingExtra", "import_extra"]

#: How to install each optional part: the package alone, or the clone's extra.
EXTRAS: dict[str, str] = {
    "server": ("pip install '.[server]' in the lossd clone (torch, grpcio-reflection, grpcio-health-checking, "
               "grpcio-status)"),
    "torch": "pip install torch (or pip install '.[server]' in the lossd clone)",
    "plot": "pip install matplotlib (or pip install '.[plot]' in the lossd clone)",
    "progress": "pip install tqdm (or pip install '.[progress]' in the lossd clone)",
    "yaml": "pip install pyyaml, or write the spec as JSON",
}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the pip command."""


def import_extra(module: str, needed_for: str, extra: str | None = None) -> Any:
    """``importlib.import_module(module)``, or :class:`MissingExtra` saying what ``needed_for``
    needs and how to install it (``EXTRAS[extra]``, default ``EXTRAS[module]``).

    A module that is installed but fails to import for another reason raises as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        hint = EXTRAS[extra or top]
        raise MissingExtra(f"{needed_for} needs {top}, which is not installed: {hint}", name=top) from None
