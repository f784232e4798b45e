"""pytest plugin entry point of the conformance kit (registered through ``pytest11``).

``pytest --strategy=SPEC`` adds one item per (contract, situation) beside the project's own tests, each
named ``<ID>-<name>[<situation>]`` (``-k K3`` selects a contract). ``pytest --store=FACTORY`` without a
strategy adds the store suite (section T) instead, one item per (contract, access path). Without either
(or their ini keys) the plugin does nothing at all. The verdict of every item travels in
``user_properties`` so the controller of a pytest-xdist run builds the table and reports from reports
alone; after the run, what ran is compared with the plan computed up front (no silent shrinkage).
"""

from __future__ import annotations

import inspect
import json
import multiprocessing
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conformance import __version__ as KIT_VERSION
from conformance.catalogue import ACCESS_PATHS, CATALOGUE
from conformance.checks import CheckContext, CheckSpec, load_checks
from conformance.plan import PlanEntry, Subject, compute_plan, unimplemented_contracts
from conformance.report import ConformanceReport, ItemResult, render_table, write_report
from conformance.scenarios import Target
from conformance.target import (
    TargetError,
    make_target,
    validate_store_target,
    validate_target,
)
from conformance.verdicts import ContractFailed, DeclaredLimitation, NotApplicable
from conformance.waivers import WaiverError, Waivers, load_waivers

__all__ = ["ConformanceCollector", "ConformanceSession", "ContractItem", "UnderTest"]

VERDICT_PROPERTY = "conformance_verdict"
_PLUGIN_NAME = "conformance-session"
_COLLECTOR_NAME = "conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "conformance", "conformance kit: check an ExecutionStrategy or a LightningStore against its contracts"
    )
    group.addoption(
        "--strategy",
        dest="conformance_strategy",
        metavar="SPEC",
        default=None,
        help="strategy under test: a registry alias (shm), pkg.module.Class or module:Class; "
        "adds the contract suite beside the collected tests",
    )
    group.addoption(
        "--strategy-option",
        dest="conformance_strategy_options",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="constructor argument of the strategy (repeatable); VALUE is JSON when it parses, else a string",
    )
    group.addoption(
        "--store",
        dest="conformance_store",
        metavar="FACTORY",
        default=None,
        help="store factory, module:Callable or dotted path: with --strategy, the store the strategy gets "
        "(default: agentlightning.store.memory:InMemoryLightningStore); without it, the store whose "
        "contracts (section T) are checked",
    )
    group.addoption(
        "--store-option",
        dest="conformance_store_options",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="keyword argument of the store factory (repeatable); "
        "VALUE is JSON when it parses, else a string",
    )
    group.addoption(
        "--conformance-timeout-scale",
        dest="conformance_timeout_scale",
        metavar="F",
        type=float,
        default=None,
        help="multiply every time bound of the catalogue by F (default 1.0)",
    )
    group.addoption(
        "--conformance-seed",
        dest="conformance_seed",
        metavar="N",
        type=int,
        default=None,
        help="seed of every randomised choice (default: random, printed in the header to replay)",
    )
    group.addoption(
        "--conformance-report",
        dest="conformance_report",
        metavar="PATH",
        default=None,
        help="write the report: PATH.json -> JSON, PATH.md -> Markdown, otherwise both PATH.json and PATH.md",
    )
    group.addoption(
        "--conformance-waivers",
        dest="conformance_waivers",
        metavar="FILE",
        default=None,
        help="waiver file (TOML, or JSON when it ends in .json): [[waiver]] id, reason, kit_version",
    )
    group.addoption(
        "--conformance-examples",
        dest="conformance_examples",
        metavar="N",
        type=int,
        default=None,
        help="P1 thorough profile: run N hypothesis-drawn scenarios (default: the CI profile, about 60 s)",
    )
    group.addoption(
        "--conformance-perturb",
        dest="conformance_perturb",
        choices=("off", "p1"),
        default="off",
        help="P1: draw a seeded scheduling perturbation with each scenario (small delays at thread and "
        "process start, event set()/wait(), socket sends, and a random switch interval); default off",
    )
    group.addoption(
        "--conformance-replay",
        dest="conformance_replay",
        metavar="SCENARIO",
        default=None,
        help="P1: replay one scenario (JSON as printed on failure, b64:<base64>, or a file holding it)",
    )
    group.addoption(
        "--conformance-only",
        dest="conformance_only",
        action="store_true",
        default=False,
        help="collect only the contract suite, none of the project's own tests "
        "(python -m conformance sets it)",
    )
    parser.addini("conformance_strategy", "strategy SPEC when --strategy is not given", default="")
    parser.addini("conformance_strategy_options", "KEY=VALUE constructor arguments", type="args", default=[])
    parser.addini("conformance_store", "store factory when --store is not given", default="")
    parser.addini("conformance_store_options", "KEY=VALUE store factory keywords", type="args", default=[])
    parser.addini(
        "conformance_timeout_scale", "time bound multiplier when not given on the command line", default=""
    )
    parser.addini("conformance_waivers", "waiver file when --conformance-waivers is not given", default="")


def _setting(config: pytest.Config, option: str, ini: str | None = None) -> Any:
    value = config.getoption(option)
    if value in (None, "", []) and ini is not None:
        value = config.getini(ini)
    return value if value not in ("", []) else None


def pytest_configure(config: pytest.Config) -> None:
    spec = _setting(config, "conformance_strategy", "conformance_strategy")
    store = _setting(config, "conformance_store", "conformance_store")
    if not spec and not store:
        return
    config.pluginmanager.register(ConformanceSession.from_config(config, str(spec or "")), _PLUGIN_NAME)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistBridge(), "conformance-xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    # The sandbox keeps a pre-imported zygote process per pytest process; it is ours to stop.
    sandbox = sys.modules.get("conformance.sandbox")
    shutdown = getattr(sandbox, "shutdown_sandboxes", None)
    if shutdown is not None:
        shutdown()


class _XdistBridge:
    """Hands the controller's seed and resolved paths to xdist workers so every process agrees."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        session = _session(node.config)
        node.workerinput["conformance_seed"] = session.seed
        node.workerinput["conformance_waivers"] = session.waivers_path

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        session = _session(node.config)
        output = getattr(node, "workeroutput", {}) or {}
        session.collected.update(output.get("conformance_collected", ()))
        session.deselected.update(output.get("conformance_deselected", ()))


@dataclass(frozen=True)
class UnderTest:
    """What the session checks: a strategy (every section but T) or a store (section T), resolved."""

    kind: Subject
    target: Target
    class_path: str  # "module.Class"
    version: str
    capabilities: dict[str, Any]
    strategy_class: type | None = None

    @property
    def spec(self) -> str:
        """The SPEC as the user gave it: the strategy, or the store factory."""
        return self.target.strategy if self.kind == "strategy" else self.target.store_factory

    @classmethod
    def resolve(cls, target: Target) -> UnderTest:
        """Resolve and validate ``target``: a strategy when it names one, else its store."""
        if target.strategy:
            resolved = validate_target(target)
            return cls(
                "strategy",
                target,
                resolved.class_path,
                resolved.version,
                resolved.capabilities,
                resolved.strategy_class,
            )
        store = validate_store_target(target)
        return cls("store", target, store.class_path, store.version, store.capabilities)


class ConformanceSession:
    """The plugin's state for one pytest session with a strategy or a store: what is under test, the
    plan, waivers, verdicts."""

    def __init__(
        self,
        config: pytest.Config,
        under_test: UnderTest,
        checks: list[CheckSpec],
        waivers: Waivers,
        waivers_path: str | None,
        seed: int,
        timeout_scale: float,
    ) -> None:
        self.config = config
        self.under_test = under_test
        self.checks = [spec for spec in checks if CATALOGUE[spec.contract_id].subject == under_test.kind]
        self.plan = compute_plan(
            self.checks, under_test.capabilities, under_test.strategy_class, subject=under_test.kind
        )
        self.plan_by_item = {entry.item_name: entry for entry in self.plan}
        self.waivers = waivers
        self.waivers_path = waivers_path
        self.seed = seed
        self.timeout_scale = timeout_scale
        self.results: dict[str, ItemResult] = {}
        self.collected: set[str] = set()
        self.deselected: set[str] = set()
        self.missing: list[str] = []
        self.report: ConformanceReport | None = None
        self.kit_options: dict[str, Any] = {}

    @classmethod
    def from_config(cls, config: pytest.Config, spec: str) -> ConformanceSession:
        """The session for strategy ``spec``, or, when ``spec`` is empty, for the ``--store`` alone."""
        worker_input: dict[str, Any] = getattr(config, "workerinput", {})
        options = config.getoption("conformance_strategy_options") or config.getini(
            "conformance_strategy_options"
        )
        store_options = config.getoption("conformance_store_options") or config.getini(
            "conformance_store_options"
        )
        scale_raw = _setting(config, "conformance_timeout_scale", "conformance_timeout_scale")
        try:
            scale = float(scale_raw) if scale_raw is not None else 1.0
        except ValueError:
            raise pytest.UsageError(f"--conformance-timeout-scale {scale_raw!r} is not a number") from None
        if not scale > 0 or scale == float("inf"):
            raise pytest.UsageError(f"--conformance-timeout-scale {scale_raw!r} must be a positive number")
        if not spec and options:
            raise pytest.UsageError(
                "conformance: --strategy-option needs --strategy; "
                "a store's factory keywords go in --store-option"
            )
        try:
            target = make_target(
                spec,
                list(options),
                _setting(config, "conformance_store", "conformance_store"),
                store_options=list(store_options),
            )
            under_test = UnderTest.resolve(target)
        except TargetError as error:
            raise pytest.UsageError(f"conformance: {error}") from None
        try:
            checks = load_checks()
        except Exception as error:  # a broken check module would silently shrink the suite: refuse to run
            raise pytest.UsageError(
                f"conformance: the kit's checks failed to import: {type(error).__name__}: {error}"
            ) from None
        waivers_path = worker_input.get("conformance_waivers")
        if waivers_path is None:
            raw = _setting(config, "conformance_waivers", "conformance_waivers")
            waivers_path = str(Path(raw).resolve()) if raw else None
        waivers = Waivers()
        if waivers_path:
            try:
                waivers = load_waivers(waivers_path, kit_version=KIT_VERSION)
                registered: dict[str, list[str]] = {}
                for check in checks:
                    if CATALOGUE[check.contract_id].subject == under_test.kind:
                        registered.setdefault(check.contract_id, []).append(check.situation)
                waivers.check_situations(registered)
            except WaiverError as error:
                raise pytest.UsageError(f"conformance: {error}") from None
        seed = worker_input.get("conformance_seed", config.getoption("conformance_seed"))
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        session = cls(config, under_test, checks, waivers, waivers_path, int(seed), scale)
        session.kit_options = _p1_options(config)
        return session

    # -- header and plan ------------------------------------------------------------------------------

    @property
    def start_method(self) -> str:
        # get_start_method() without allow_none would fix the method in the pytest process: never call it.
        return (
            self.under_test.target.start_method
            or multiprocessing.get_start_method(allow_none=True)
            or multiprocessing.get_all_start_methods()[0]
        )

    @property
    def unimplemented(self) -> list[str]:
        return unimplemented_contracts(self.checks, self.under_test.kind, self.plan)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        under_test = self.under_test
        target = under_test.target
        run = [e for e in self.plan if e.status == "run"]
        limited = [e for e in self.plan if e.status == "limitation"]
        excluded = [e for e in self.plan if e.status == "n/a"]
        store_options = _options_text(target.store_options)
        replay = (
            f"seed {self.seed} (replay with --conformance-seed {self.seed}), "
            f"timeout scale {self.timeout_scale}"
        )
        if under_test.kind == "strategy":
            lines = [
                f"conformance kit {KIT_VERSION}: strategy {target.strategy!r} -> {under_test.class_path} "
                f"{under_test.version}",
                f"conformance: options {_options_text(target.options)}; store {target.store_factory}"
                + (f" with {store_options}" if target.store_options else ""),
                f"conformance: Python {platform.python_version()}, "
                f"start method {self.start_method}, {replay}",
            ]
        else:
            lines = [
                f"conformance kit {KIT_VERSION}: store {target.store_factory!r} -> {under_test.class_path} "
                f"{under_test.version}",
                f"conformance: store options {store_options}; access paths {', '.join(ACCESS_PATHS)}",
                f"conformance: Python {platform.python_version()}, {replay}",
            ]
        lines += [
            f"conformance: capabilities {json.dumps(under_test.capabilities, default=list)}",
            f"conformance plan: {len(self.plan)} items: {len(run)} run, {len(limited)} limitation expected, "
            f"{len(excluded)} n/a",
        ]
        if under_test.kind == "strategy":
            lines.append(_p1_header(self.kit_options))
        per_contract: dict[str, int] = {}
        for entry in (e for e in self.plan if e.status != "n/a"):
            per_contract[entry.contract_id] = per_contract.get(entry.contract_id, 0) + 1
        lines.append("  run: " + " ".join(f"{cid}x{n}" if n > 1 else cid for cid, n in per_contract.items()))
        lines.extend(f"  {e.status}: {e.item_name} ({e.capability}): {e.reason}" for e in limited + excluded)
        unimplemented = self.unimplemented
        if unimplemented:
            lines.append(f"  not checked by this kit build: {', '.join(unimplemented)}")
        if self.waivers.entries:
            lines.append(
                f"  waivers ({self.waivers.source}): "
                + ", ".join(
                    w.contract_id + (f"{list(w.situations)}" if w.situations else "")
                    for w in self.waivers.entries
                )
            )
        return lines

    # -- collection -----------------------------------------------------------------------------------

    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        return True if config.getoption("conformance_only") else None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        # tryfirst: our items exist before -k/-m deselection runs, so they are selectable like any test.
        # Collected through pytest's own collect-report hooks, so the terminal's "collected N items",
        # xdist's collection check and --collect-only all see the suite like any other collector's.
        collector = ConformanceCollector.from_parent(session, name=_COLLECTOR_NAME, nodeid=_COLLECTOR_NAME)
        collector.ihook.pytest_collectstart(collector=collector)
        report: pytest.CollectReport = collector.ihook.pytest_make_collect_report(collector=collector)
        collector.ihook.pytest_collectreport(report=report)
        if report.failed:
            raise pytest.UsageError(
                f"conformance: collecting the contract suite failed:\n{report.longreprtext}"
            )
        for item in report.result:
            assert isinstance(item, ContractItem)
            item.ihook.pytest_itemcollected(item=item)
            items.append(item)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected.update(item.name for item in items if isinstance(item, ContractItem))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected.update(item.name for item in session.items if isinstance(item, ContractItem))
        worker_output = getattr(self.config, "workeroutput", None)
        if worker_output is not None:
            worker_output["conformance_collected"] = sorted(self.collected)
            worker_output["conformance_deselected"] = sorted(self.deselected)

    # -- running --------------------------------------------------------------------------------------

    def context_for(self, spec: CheckSpec) -> CheckContext:
        return CheckContext(
            contract_id=spec.contract_id,
            situation=spec.situation,
            target=self.under_test.target,
            capabilities=self.under_test.capabilities,
            timeout_scale=self.timeout_scale,
            seed=self.seed,
            kit_options=self.kit_options,
        )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        # A skip raised inside runtest points at the plugin; point n/a and limitations at the check.
        if isinstance(item, ContractItem) and report.skipped and isinstance(report.longrepr, tuple):
            path, line, _ = item.reportinfo()
            report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
        return report

    # -- results --------------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        item_name = report.nodeid.rsplit("::", 1)[-1]
        entry = self.plan_by_item.get(item_name)
        if entry is None:
            return
        verdict = next((json.loads(str(v)) for k, v in report.user_properties if k == VERDICT_PROPERTY), None)
        previous = self.results.get(item_name)
        if verdict is not None and report.when == "call":
            result = ItemResult(
                entry.contract_id,
                entry.name,
                entry.situation,
                verdict["verdict"],
                verdict["reason"],
                report.duration,
            )
        elif report.when == "call" or (report.when == "setup" and not report.passed):
            # No verdict property: the item was stopped from outside (pytest-timeout, a skip marker, a
            # crashed xdist worker); its pytest outcome is the verdict.
            mapped = {"passed": "pass", "failed": "fail", "skipped": "n/a"}[report.outcome]
            reason = _short_reason(report)
            result = ItemResult(
                entry.contract_id, entry.name, entry.situation, mapped, reason, report.duration
            )
        elif report.when == "teardown" and report.failed and previous is not None:
            result = ItemResult(
                previous.contract_id,
                previous.name,
                previous.situation,
                "fail",
                f"teardown failed: {_short_reason(report)}",
                previous.duration,
            )
        else:
            return
        self.results[item_name] = result

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or self.config.getoption("collectonly"):
            return  # workers: the controller judges the whole run; --collect-only: nothing was meant to run
        ran = set(self.results)
        self.missing = [
            e.item_name for e in self.plan if e.item_name not in ran and e.item_name not in self.deselected
        ]
        self.report = self._build_report()
        path = self.config.getoption("conformance_report")
        if path:
            self.written = write_report(self.report, path)
        if self.missing and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _build_report(self) -> ConformanceReport:
        under_test = self.under_test
        target = under_test.target
        order = {entry.item_name: i for i, entry in enumerate(self.plan)}
        return ConformanceReport(
            kind=under_test.kind,
            subject=under_test.spec,
            subject_class=under_test.class_path,
            subject_version=under_test.version,
            kit_version=KIT_VERSION,
            options=dict(target.options),
            store_factory=target.store_factory,
            store_options=dict(target.store_options),
            access_paths=list(ACCESS_PATHS) if under_test.kind == "store" else [],
            python=platform.python_version(),
            start_method=self.start_method,
            seed=self.seed,
            timeout_scale=self.timeout_scale,
            plan=self.plan,
            results=sorted(self.results.values(), key=lambda r: order[r.item_name]),
            missing=self.missing,
            deselected=sorted(self.deselected, key=lambda name: order.get(name, 0)),
            unimplemented=self.unimplemented,
            waivers=self.waivers.source,
        )

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if self.report is None:
            return
        terminalreporter.section(f"conformance: {self.under_test.class_path}")
        planned = {
            status: sum(1 for e in self.plan if e.status == status) for status in ("run", "limitation", "n/a")
        }
        terminalreporter.line(
            f"plan: {len(self.plan)} items ({planned['run']} run, {planned['limitation']} limitation "
            f"expected, {planned['n/a']} n/a); reported {len(self.results)}, "
            f"deselected {len(self.deselected)}"
        )
        terminalreporter.line(render_table(self.report))
        if self.missing:
            terminalreporter.line(
                f"conformance: FAILED: what ran differs from the plan; missing {len(self.missing)} item(s): "
                + ", ".join(self.missing),
                red=True,
            )
        for written in getattr(self, "written", []):
            terminalreporter.line(f"conformance report written to {written}")


def _p1_header(options: dict[str, Any]) -> str:
    """How P1 explores in this run (its profile decides how much is checked, so the header says it)."""
    from conformance.contracts.properties import CI_BUDGET, CI_EXAMPLES

    if options.get("replay") is not None:
        return "conformance P1: replaying one scenario (--conformance-replay)"
    if options.get("examples"):
        return f"conformance P1: thorough profile, {options['examples']} scenarios"
    return f"conformance P1: CI profile, up to {CI_EXAMPLES} scenarios within {CI_BUDGET:g} s"


def _p1_options(config: pytest.Config) -> dict[str, Any]:
    """P1's options, validated up front: a bad value is a usage error naming it, before anything runs."""
    options: dict[str, Any] = {}
    examples = config.getoption("conformance_examples")
    if examples is not None:
        if examples < 1:
            raise pytest.UsageError(
                f"--conformance-examples {examples!r} must be a positive number of scenarios"
            )
        options["examples"] = examples
    if config.getoption("conformance_perturb", "off") == "p1":
        options["perturb"] = True
    replay = config.getoption("conformance_replay")
    if replay:
        from conformance.schedules import scenario_from_json

        try:
            options["replay"] = scenario_from_json(replay)
        except ValueError as error:
            raise pytest.UsageError(f"conformance: {error}") from None
    return options


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in options.items()) or "none"


def _session(config: pytest.Config) -> ConformanceSession:
    session = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    assert isinstance(session, ConformanceSession), (
        "the conformance session is registered in pytest_configure"
    )
    return session


def _short_reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = report.longreprtext.strip()
    return text.splitlines()[-1] if text else report.outcome


class ConformanceCollector(pytest.Collector):
    """The contract suite: one ``ContractItem`` per planned (contract, situation), in plan order."""

    def collect(self) -> list[pytest.Item]:
        session = _session(self.config)
        specs = {(s.contract_id, s.situation): s for s in session.checks}
        return [
            ContractItem.from_parent(
                self, name=entry.item_name, spec=specs.get((entry.contract_id, entry.situation)), entry=entry
            )
            for entry in session.plan
        ]


class ContractItem(pytest.Item):
    """One contract in one situation; runs its check and maps the verdict to a pytest outcome.

    ``spec`` is ``None`` only for a planned ``n/a`` of a contract this kit build has no check for (the
    capabilities exclude it anyway); such an item reports its reason and runs nothing.
    """

    def __init__(self, *, spec: CheckSpec | None, entry: PlanEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if spec is None and entry.status != "n/a":
            raise ValueError(f"{entry.item_name} is planned to {entry.status} but has no check")
        self.spec = spec
        self.entry = entry
        self.extra_keyword_matches.update({entry.contract_id, f"section_{entry.contract_id[0]}"})

    def _record(self, verdict: str, reason: str) -> None:
        self.user_properties.append(
            (
                VERDICT_PROPERTY,
                json.dumps(
                    {
                        "id": self.entry.contract_id,
                        "situation": self.entry.situation,
                        "verdict": verdict,
                        "reason": reason,
                    }
                ),
            )
        )

    def runtest(self) -> None:
        session = _session(self.config)
        if self.entry.status == "n/a" or self.spec is None:
            self._record("n/a", f"{self.entry.capability}: {self.entry.reason}")
            pytest.skip(f"n/a ({self.entry.capability}): {self.entry.reason}")
        cid, situation = self.entry.contract_id, self.entry.situation
        waiver = session.waivers.find(cid, situation)
        ctx = session.context_for(self.spec)
        started = time.monotonic()
        try:
            self.spec.function(ctx)
        except ContractFailed as failure:
            if waiver is not None:
                self._record("waived", waiver.reason)
                pytest.xfail(f"waived: {waiver.reason}")
            observed = " ".join(failure.observed.split())
            figure = f"; measured {failure.figure}" if failure.figure else ""
            self._record("fail", f"observed {observed}; expected {failure.expected}{figure}")
            raise
        except NotApplicable as excluded:
            self._record("n/a", f"{excluded.capability}: {excluded.reason}")
            pytest.skip(str(excluded))
        except DeclaredLimitation as limited:
            self._record("limitation", f"{limited.capability}: {limited.reason}")
            pytest.skip(str(limited))
        except Exception as error:
            # A check that breaks (or a sandbox error) is a failed item with its traceback, never a pass.
            self._record("fail", f"check error: {type(error).__name__}: {error}")
            raise
        finally:
            self.user_properties.append(("conformance_duration", f"{time.monotonic() - started:.3f}"))
        if waiver is not None:
            message = (
                f"waiver for {cid} is stale: {cid} now passes"
                f"{'' if waiver.situations is None else f' in {situation}'}; remove it"
            )
            self._record("fail", message)
            pytest.fail(message, pytrace=False)
        self._record("pass", "")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        if isinstance(excinfo.value, ContractFailed):
            return excinfo.value.render()
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        title = f"{self.entry.contract_id} {self.entry.name} [{self.entry.situation}]"
        if self.spec is None:  # a planned n/a without a check: the plan decided it
            return inspect.getsourcefile(compute_plan) or self.path, None, title
        function = inspect.unwrap(self.spec.function)  # a store check points at its body
        try:
            path: Any = inspect.getsourcefile(function) or self.path
            line: int | None = inspect.getsourcelines(function)[1] - 1
        except (OSError, TypeError):
            path, line = self.path, None
        return path, line, title
