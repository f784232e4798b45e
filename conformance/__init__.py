"""The conformance kit: ``pytest --strategy=SPEC`` checks an ExecutionStrategy against every contract."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
