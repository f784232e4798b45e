"""The broken-store zoo: stores with one realistic defect each, to prove section T catches them.

Every module ``<id>_<defect>.py`` defines one store (the reference ``InMemoryLightningStore``, or for T8
the durable ``SqliteLightningStore``, with one method overridden) and a module-level
``BREAKS = "<contract ID>"``; its docstring says what the defect is and why someone would write it.
A store whose defect shows in the history of any client that meets it also declares
``ALSO_BREAKS = ("T9",)``: T9 history must catch it too. Watch one fail for the right contract::

    pytest --store=strategies.broken_stores.t2_check_then_claim.CheckThenClaimStore -k T2-

``specimens()`` lists them all (for ``python -m conformance.selfcheck`` and the meta-tests).
"""

from __future__ import annotations

from strategies.zoo import Specimen, collect

__all__ = ["Specimen", "specimens"]


def _is_store(cls: type) -> bool:
    return callable(getattr(cls, "dequeue_rollout", None))


def specimens() -> list[Specimen]:
    """Every module of this package that declares ``BREAKS``, in name order."""
    return collect(__name__, __path__, _is_store, lambda cls: "store")
