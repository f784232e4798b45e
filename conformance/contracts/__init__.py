"""The contract checks, one module per catalogue section; importing this package registers them all.

``lifecycle`` (L), ``interrupts`` (K), ``exceptions`` (E), ``resources`` (R), ``store`` (S),
``process_faults`` (F), ``configuration`` (G), ``store_itself`` (T: a store alone), and any further
module placed here. A module that exists
but fails to import is an error, never a silently smaller suite.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

# Every module in this package, in name order: the registry orders checks by the catalogue anyway.
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
