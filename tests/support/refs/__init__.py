"""References and cases for every built-in loss, one module per registry module.

Each module defines ``REFERENCES: dict[str, Reference]`` and
``CASES: dict[str, list[Case]]`` keyed by canonical loss name.
"""

from __future__ import annotations

import importlib
import pkgutil

from support.parity import Case, Reference

REFERENCES: dict[str, Reference] = {}
CASES: dict[str, list[Case]] = {}

for _info in pkgutil.iter_modules(__path__):
    _mod = importlib.import_module(f"{__name__}.{_info.name}")
    for _name, _ref in getattr(_mod, "REFERENCES", {}).items():
        assert _name not in REFERENCES, f"two references for {_name}"
        REFERENCES[_name] = _ref
    for _name, _cases in getattr(_mod, "CASES", {}).items():
        assert _name not in CASES, f"two case lists for {_name}"
        CASES[_name] = list(_cases)
