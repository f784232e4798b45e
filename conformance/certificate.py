"""The conformance certificate: one JSON document that says what was checked, how, against what, and with
which verdicts, so a CI gate (or a reader months later) can verify the claim without re-running the kit.

``--conformance-certificate PATH`` writes it after a run: the kit version and a hash of the catalogue and
of the registered checks, the profile, seed, repeat count and timeout scale, Python and the platform, the
strategy's SPEC, class, version and a hash of its source, its capabilities, the options section D ran
with (``section_d``), the whole plan (every ``n/a`` with its reason, every situation the profile left
out), and every verdict with its figure and bound.
A SHA-256 digest over the canonical JSON catches an edited document.

``verify_certificate`` (``python -m conformance verify PATH``) lists every reason the document is not a
certificate: a bad digest, an incomplete run (a profile that left situations out, deselected or missing
items), a waiver, a verdict other than pass / n/a / declared limitation, results that contradict the
plan, or a kit that differs from the installed one (version, catalogue, checks, the plan they compute
now, the strategy's source). ``badge`` turns a verified (or refused) document into a shields.io endpoint
JSON.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from conformance import __version__ as KIT_VERSION
from conformance.catalogue import catalogue_json
from conformance.checks import CheckSpec
from conformance.profiles import Profile
from conformance.report import ConformanceReport

__all__ = [
    "CERTIFICATE_SCHEMA",
    "CertificateError",
    "badge",
    "build_certificate",
    "catalogue_hash",
    "checks_hash",
    "document_digest",
    "load_certificate",
    "source_hash",
    "verify_certificate",
    "write_certificate",
]

CERTIFICATE_SCHEMA = 1
_ACCEPTED = ("pass", "n/a", "limitation")


class CertificateError(ValueError):
    """The file is not a certificate at all (unreadable, not JSON, not this schema)."""


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def catalogue_hash() -> str:
    """A hash of the installed contract catalogue (IDs, names, MUST sentences, situations)."""
    return _sha256(catalogue_json())


def checks_hash(checks: Iterable[CheckSpec]) -> str:
    """A hash of the registered checks: which function checks which (contract, situation)."""
    return _sha256("\n".join(sorted(f"{c.contract_id}[{c.situation}]={c.origin}" for c in checks)))


def source_hash(cls: type | None) -> str:
    """A hash of the source file that defines ``cls`` (empty when it has none, e.g. a C extension)."""
    if cls is None:
        return ""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:
        return ""
    if not path:
        return ""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def document_digest(document: Mapping[str, Any]) -> str:
    """The digest of ``document`` without its own ``digest`` key, over canonical JSON."""
    body = {key: value for key, value in document.items() if key != "digest"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str))


def build_certificate(
    report: ConformanceReport,
    *,
    profile: Profile,
    capabilities: Mapping[str, Any],
    checks: Iterable[CheckSpec],
    strategy_class: type | None,
) -> dict[str, Any]:
    """The certificate of one finished run (``report``), digest included."""
    data = report.to_dict()
    document: dict[str, Any] = {
        "schema": CERTIFICATE_SCHEMA,
        "kit_version": report.kit_version,
        "catalogue_hash": catalogue_hash(),
        "checks_hash": checks_hash(checks),
        "profile": profile.to_dict(),
        "seed": report.seed,
        "repeat": report.repeat,
        "timeout_scale": report.timeout_scale,
        "python": report.python,
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "start_method": report.start_method,
        "kind": report.kind,
        "subject": {
            "spec": report.subject,
            "class": report.subject_class,
            "version": report.subject_version,
            "source_hash": source_hash(strategy_class),
            "options": report.options,
            "store_factory": report.store_factory,
            "store_options": report.store_options,
            "capabilities": dict(capabilities),
            # The options section D built the strategy with and the bounds it checked (host_options.py).
            "section_d": data["section_d"],
        },
        "waivers": report.waivers,
        "plan": data["plan"],
        "left_out_by_profile": data["left_out_by_profile"],
        "unimplemented": report.unimplemented,
        "deselected": report.deselected,
        "missing": report.missing,
        "results": data["results"],
        "contracts": data["contracts"],
        "reliability": data["reliability"],
        "totals": data["totals"],
        "ok": report.ok,
    }
    document["digest"] = document_digest(document)
    return document


def write_certificate(document: Mapping[str, Any], path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return target


def load_certificate(path: str | Path) -> dict[str, Any]:
    """Read a certificate; a file that is not one raises ``CertificateError`` naming the path."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CertificateError(f"{path}: not a readable JSON certificate: {error}") from None
    if not isinstance(document, dict) or document.get("schema") != CERTIFICATE_SCHEMA:
        raise CertificateError(f"{path}: not a conformance certificate of schema {CERTIFICATE_SCHEMA}")
    return document


def _completeness(document: Mapping[str, Any]) -> list[str]:
    problems = []
    if document.get("left_out_by_profile"):
        problems.append(
            f"incomplete: profile {document['profile'].get('name')!r} left out "
            f"{len(document['left_out_by_profile'])} situation(s); certify with every situation"
        )
    for key in ("deselected", "missing"):
        if document.get(key):
            problems.append(f"incomplete: {len(document[key])} item(s) {key}: {', '.join(document[key][:5])}")
    if document.get("waivers"):
        problems.append(f"waived: the run used the waiver file {document['waivers']}")
    results = {r["item"]: r for r in document.get("results", [])}
    for entry in document.get("plan", []):
        result = results.pop(entry["item"], None)
        if entry["status"] == "n/a":
            if not entry.get("reason"):
                problems.append(f"{entry['item']}: planned n/a without a reason")
            continue
        if result is None:
            problems.append(f"incomplete: {entry['item']} is planned to {entry['status']} and has no verdict")
        elif result["verdict"] not in _ACCEPTED:
            problems.append(f"{entry['item']}: {result['verdict']}: {result.get('reason', '')}".rstrip(": "))
        elif entry["status"] == "limitation" and result["verdict"] == "pass":
            pass  # a limitation that turned out to pass is better than declared
        elif result["verdict"] == "n/a" and not result.get("reason"):
            problems.append(f"{entry['item']}: n/a without a reason")
    problems.extend(f"{item}: a verdict for an item the plan does not have" for item in results)
    if not isinstance(document.get("repeat"), int) or document["repeat"] < 1:
        problems.append(f"repeat {document.get('repeat')!r} is not a positive number of runs")
    if not document.get("ok"):
        problems.append("the run itself did not pass (ok: false)")
    return problems


def _consistency(document: Mapping[str, Any], installed_checks: list[CheckSpec]) -> list[str]:
    """Differences between what the certificate says and the kit installed here."""
    from conformance.plan import compute_plan
    from conformance.target import TargetError, resolve_strategy_class

    problems = []
    if document.get("kit_version") != KIT_VERSION:
        problems.append(
            f"kit version {document.get('kit_version')!r} differs from the installed {KIT_VERSION}"
        )
    if document.get("catalogue_hash") != catalogue_hash():
        problems.append("the catalogue differs from the installed kit's (catalogue_hash)")
    subject_checks = [
        c for c in installed_checks if (c.contract_id[0] == "T") == (document.get("kind") == "store")
    ]
    if document.get("checks_hash") != checks_hash(subject_checks):
        problems.append("the registered checks differ from the installed kit's (checks_hash)")
    subject = document.get("subject", {})
    if document.get("kind") != "strategy":
        return problems
    try:
        cls = resolve_strategy_class(str(subject.get("class", "")))
    except TargetError as error:
        problems.append(f"the strategy {subject.get('class')!r} is not importable here: {error}")
        return problems
    if subject.get("source_hash") != source_hash(cls):
        problems.append(f"the source of {subject.get('class')} changed since it was certified (source_hash)")
    plan = compute_plan(subject_checks, subject.get("capabilities", {}), cls, subject="strategy")
    recomputed = {e.item_name: e.status for e in plan}
    stated = {
        e["item"]: e["status"] for e in [*document.get("plan", []), *document.get("left_out_by_profile", [])]
    }
    if recomputed != stated:
        differing = sorted(set(recomputed.items()) ^ set(stated.items()))
        problems.append(f"the plan differs from the one the installed kit computes: {differing[:5]}")
    return problems


def verify_certificate(
    document: Mapping[str, Any], installed_checks: list[CheckSpec] | None = None
) -> list[str]:
    """Every reason ``document`` is not a valid certificate for the installed kit; empty when it is."""
    if document.get("digest") != document_digest(document):
        return ["the digest does not match the content: the document was edited after it was written"]
    if installed_checks is None:
        from conformance.checks import load_checks

        installed_checks = load_checks()
    return _completeness(document) + _consistency(document, installed_checks)


def badge(document: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """A shields.io endpoint badge (``schemaVersion`` 1) for ``document`` as verified (``problems``)."""
    totals = document.get("totals", {})
    judged = sum(int(totals.get(v, 0)) for v in ("pass", "fail", "blocked", "flaky", "limitation", "waived"))
    profile = document.get("profile", {}).get("name", "?")
    if problems:
        return {"schemaVersion": 1, "label": "conformance", "message": "not certified", "color": "red"}
    return {
        "schemaVersion": 1,
        "label": "conformance",
        "message": f"{totals.get('pass', 0)}/{judged} pass ({profile}, kit {document.get('kit_version')})",
        "color": "brightgreen" if not totals.get("limitation") else "green",
    }
