"""Waivers: the user's list of contracts they accept failing, each with a reason and the kit version.

A waiver file is TOML (``tomllib`` on Python 3.11+, the ``tomli`` package on 3.10, which pytest itself
requires there, so no extra dependency) or JSON (``*.json``)::

    [[waiver]]
    id = "L7"
    reason = "our thread pool cannot interrupt C extensions"
    kit_version = "0.1.0"
    situations = ["default"]   # optional: without it, every situation of the contract

A waiver written for another kit version has expired; an unknown ID or situation is an error; a waived
check that passes fails as stale (the plugin enforces that at run time).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.catalogue import CATALOGUE

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as _toml  # type: ignore[import-not-found, unused-ignore]

__all__ = ["Waiver", "WaiverError", "Waivers", "load_waivers"]

_FIELDS = frozenset({"id", "reason", "kit_version", "situations"})


class WaiverError(ValueError):
    """The waiver file is unreadable, malformed, expired or names an unknown contract (the message says)."""


@dataclass(frozen=True)
class Waiver:
    """One waiver: contract ``id``, ``reason``, ``kit_version``, optional ``situations`` (None = all)."""

    contract_id: str
    reason: str
    kit_version: str
    situations: tuple[str, ...] | None = None

    def covers(self, contract_id: str, situation: str) -> bool:
        return self.contract_id == contract_id and (self.situations is None or situation in self.situations)


@dataclass(frozen=True)
class Waivers:
    """The waivers of one file, looked up per (contract, situation)."""

    entries: tuple[Waiver, ...] = ()
    source: str = ""

    def find(self, contract_id: str, situation: str) -> Waiver | None:
        return next((w for w in self.entries if w.covers(contract_id, situation)), None)

    def check_situations(self, registered: Mapping[str, Iterable[str]]) -> None:
        """Every waived contract has a check here and every waived situation exists for it."""
        for waiver in self.entries:
            if waiver.contract_id not in registered:
                raise WaiverError(
                    f"{self.source}: waiver for {waiver.contract_id} names a contract "
                    "this kit build does not check"
                )
            known = list(registered[waiver.contract_id])
            for situation in waiver.situations or ():
                if situation not in known:
                    raise WaiverError(
                        f"{self.source}: waiver for {waiver.contract_id} names unknown situation "
                        f"{situation!r}; known: {', '.join(known)}"
                    )


def _parse_entry(raw: Any, index: int, source: str, kit_version: str) -> Waiver:
    where = f"{source}: waiver #{index + 1}"
    if not isinstance(raw, Mapping):
        raise WaiverError(f"{where} must be a table/object, got {raw!r}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise WaiverError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(_FIELDS))}")
    for required in ("id", "reason", "kit_version"):
        if not isinstance(raw.get(required), str) or not raw[required].strip():
            raise WaiverError(f"{where}: {required!r} is required and must be a non-empty string")
    contract_id = raw["id"].strip()
    if contract_id not in CATALOGUE:
        raise WaiverError(f"{where}: unknown contract ID {contract_id!r}; known: {', '.join(CATALOGUE)}")
    if raw["kit_version"] != kit_version:
        raise WaiverError(
            f"{where}: waiver for {contract_id} was written for kit {raw['kit_version']}, "
            f"this is kit {kit_version}; it has expired: re-run without it and renew or remove it"
        )
    situations = raw.get("situations")
    if situations is not None:
        if isinstance(situations, str) or not isinstance(situations, list) or not situations:
            raise WaiverError(f"{where}: 'situations' must be a non-empty list of situation names")
        situations = tuple(str(s) for s in situations)
    return Waiver(contract_id, raw["reason"].strip(), raw["kit_version"], situations)


def load_waivers(path: str | Path, *, kit_version: str) -> Waivers:
    """Read and validate a waiver file (TOML, or JSON when it ends in ``.json``)."""
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WaiverError(f"cannot read waiver file {source!r}: {error.strerror or error}") from None
    try:
        document: Any = json.loads(data) if path.suffix == ".json" else _toml.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise WaiverError(
            f"waiver file {source!r} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {error}"
        ) from None
    if isinstance(document, list):
        raw_entries: Any = document
    elif isinstance(document, Mapping):
        unknown = sorted(set(document) - {"waiver", "waivers"})
        if unknown:
            raise WaiverError(
                f"waiver file {source!r}: unknown top-level key {unknown[0]!r}; use [[waiver]] entries"
            )
        raw_entries = document.get("waiver", document.get("waivers", []))
    else:
        raise WaiverError(f"waiver file {source!r} must hold a list of waivers")
    if not isinstance(raw_entries, list):
        raise WaiverError(f"waiver file {source!r}: 'waiver' must be a list of entries")
    entries = tuple(_parse_entry(raw, i, source, kit_version) for i, raw in enumerate(raw_entries))
    for i, first in enumerate(entries):
        for second in entries[i + 1 :]:
            if first.contract_id == second.contract_id and (
                first.situations is None
                or second.situations is None
                or set(first.situations) & set(second.situations)
            ):
                raise WaiverError(f"waiver file {source!r}: {first.contract_id} is waived twice")
    return Waivers(entries, source)
