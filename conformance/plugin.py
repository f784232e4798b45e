"""pytest plugin entry point of the conformance kit (registered through ``pytest11``).

``pytest --strategy=SPEC`` adds one item per (contract, situation) beside the project's own tests, each
named ``<ID>-<name>[<situation>]`` (``-k K3`` selects a contract). ``pytest --store=FACTORY`` without a
strategy adds the store suite (section T) instead, one item per (contract, access path). Without either
(or their ini keys) the plugin does nothing at all. The verdict of every item travels in
``user_properties`` so the controller of a pytest-xdist run builds the table and reports from reports
alone; after the run, what ran is compared with the plan computed up front (no silent shrinkage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import multiprocessing
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conformance import __version__ as KIT_VERSION
from conformance.catalogue import ACCESS_PATHS, CATALOGUE
from conformance.checks import CheckContext, CheckSpec, load_checks
from conformance.host_options import HostOptions, resolve_host_options
from conformance.journal import render_side_by_side, render_timeline
from conformance.plan import PlanEntry, Subject, compute_plan, select_for_profile, unimplemented_contracts
from conformance.prerequisites import (
    PREREQUISITES,
    STALL_PREREQUISITES,
    STARTUP_PREREQUISITE,
    PrerequisiteLedger,
    prerequisites_of,
    stall_prerequisites_of,
    startup_dependencies,
)
from conformance.profiles import DEFAULT_PROFILE, PERTURB_MODES, PROFILES, Profile, get_profile, perturb_text
from conformance.report import ConformanceReport, ItemResult, render_table, write_report
from conformance.scenarios import Scenario, Target
from conformance.session_services import SessionService, SessionServiceError, service_of, started
from conformance.signal_defaults import inherited_signal_state
from conformance.target import (
    TargetError,
    make_target,
    validate_store_target,
    validate_target,
)
from conformance.verdicts import CheckOutcome, ContractFailed
from conformance.waivers import WaiverError, Waivers, load_waivers

__all__ = ["ConformanceCollector", "ConformanceSession", "ContractItem", "UnderTest"]

VERDICT_PROPERTY = "conformance_verdict"
_PLUGIN_NAME = "conformance-session"
_SERVICES = pytest.StashKey[contextlib.ExitStack]()
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
        "--conformance-profile",
        dest="conformance_profile",
        metavar="NAME",
        default=None,
        help=f"how much to check: {', '.join(PROFILES)} (default {DEFAULT_PROFILE}); "
        "quick runs one situation per contract, certify every situation with repeats",
    )
    group.addoption(
        "--conformance-repeat",
        dest="conformance_repeat",
        metavar="N",
        type=int,
        default=None,
        help="run each item N times and report passes/N per contract with a 95%% interval; an item that "
        "both passed and failed is flaky (default: what the profile says, 1 but for certify)",
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
        "--conformance-certificate",
        dest="conformance_certificate",
        metavar="PATH",
        default=None,
        help="write the run's certificate (JSON: kit, plan, profile, seed, platform, strategy source hash, "
        "every verdict); check it with python -m conformance verify PATH",
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
        help="run N hypothesis-drawn scenarios (P1), or with --store alone N store workloads per access path "
        "(T9) (default: what the profile says; T9: its CI budget)",
    )
    group.addoption(
        "--conformance-perturb",
        dest="conformance_perturb",
        choices=PERTURB_MODES,
        default=None,
        help="seeded scheduling perturbation (small delays at thread and process start, event set()/wait(), "
        "socket sends, store calls, the store wrapper's locks, a bundle's first await, and a random switch "
        "interval): p1 = drawn with each P1 scenario, all = also the fixed catalogue at a low rate, off = "
        "none (default: what the profile says: p1, all for thorough and certify)",
    )
    group.addoption(
        "--conformance-replay",
        dest="conformance_replay",
        metavar="SCENARIO",
        default=None,
        help="replay one P1 scenario, or with --store alone one T9 workload (as printed on failure: JSON, "
        "b64:<base64>, or a file holding it)",
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
    parser.addini("conformance_profile", "profile when --conformance-profile is not given", default="")


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
    session = ConformanceSession.from_config(config, str(spec or ""))
    config.pluginmanager.register(session, _PLUGIN_NAME)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistBridge(), "conformance-xdist")
    if not hasattr(config, "workerinput"):  # xdist workers inherit the controller's service environment
        _start_session_service(config, session)


def _start_session_service(config: pytest.Config, session: ConformanceSession) -> None:
    """Start the strategy's session service, if it declares one (``conformance.session_services``)."""
    try:
        service = service_of(session.under_test.strategy_class)
        if service is None:
            return
        stack = contextlib.ExitStack()
        config.stash[_SERVICES] = stack
        session.service = stack.enter_context(started(service))
    except SessionServiceError as error:
        raise pytest.UsageError(f"conformance: {error}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    # The sandbox keeps a pre-imported zygote process per pytest process; it is ours to stop.
    sandbox = sys.modules.get("conformance.sandbox")
    shutdown = getattr(sandbox, "shutdown_sandboxes", None)
    if shutdown is not None:
        shutdown()
    services = config.stash.get(_SERVICES, None)
    if services is not None:  # after the zygote: no scenario uses the service any more
        del config.stash[_SERVICES]
        services.close()


class _XdistBridge:
    """Hands the controller's seed and resolved paths to xdist workers so every process agrees."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        session = _session(node.config)
        node.workerinput["conformance_seed"] = session.seed
        node.workerinput["conformance_waivers"] = session.waivers_path
        node.workerinput["conformance_ledger"] = str(session.ledger.directory)

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
        profile: Profile | None = None,
    ) -> None:
        self.config = config
        self.under_test = under_test
        self.profile = profile or get_profile(DEFAULT_PROFILE)
        self.checks = [spec for spec in checks if CATALOGUE[spec.contract_id].subject == under_test.kind]
        self.full_plan = compute_plan(
            self.checks, under_test.capabilities, under_test.strategy_class, subject=under_test.kind
        )
        self.plan, self.left_out = select_for_profile(self.full_plan, self.profile)
        # What section D builds the strategy with (its declared host_test_options, or its defaults).
        self.section_d: HostOptions | None = None
        if under_test.kind == "strategy" and under_test.strategy_class is not None:
            try:
                self.section_d = resolve_host_options(
                    under_test.strategy_class,
                    under_test.target,
                    under_test.capabilities,
                    at_defaults=self.profile.section_d == "defaults",
                )
            except TargetError as error:
                raise pytest.UsageError(f"conformance: {error}") from None
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
        self.specs = {(spec.contract_id, spec.situation): spec for spec in self.checks}
        self.repeat = self.profile.repeat
        self.service: SessionService | None = None  # the strategy's session service, once started
        # Prerequisite outcomes are shared by every process of the run: the controller (or the only
        # process) makes the directory, xdist workers get it through workerinput, the maker removes it.
        shared = getattr(config, "workerinput", {}).get("conformance_ledger")
        self._owns_ledger = shared is None
        self.ledger = PrerequisiteLedger(shared or tempfile.mkdtemp(prefix="conformance-prerequisites-"))

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
        profile_name = _setting(config, "conformance_profile", "conformance_profile") or DEFAULT_PROFILE
        try:
            profile = get_profile(str(profile_name))
        except ValueError as error:
            raise pytest.UsageError(f"conformance: {error}") from None
        repeat = config.getoption("conformance_repeat")
        if repeat is not None and repeat < 1:
            raise pytest.UsageError(f"--conformance-repeat {repeat!r} must be a positive number of runs")
        session = cls(config, under_test, checks, waivers, waivers_path, int(seed), scale, profile)
        session.repeat = repeat or profile.repeat
        session.kit_options = {**profile.p1_options(), **_kit_options(config, under_test.kind)}
        session.kit_options["perturb"] = config.getoption("conformance_perturb") or profile.perturb
        if "examples" in session.kit_options:
            session.kit_options.pop("budget", None)
            session.kit_options.pop("max_examples", None)
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
            f"timeout scale {self.timeout_scale}, profile {self.profile.name}"
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
        inherited = inherited_signal_state()
        if inherited is not None and under_test.kind == "strategy":
            lines.append(
                f"conformance: this run was started with {inherited} (a background job of a script?); "
                "every scenario process and host side restores the defaults first, so the Ctrl+C "
                "checks (K3-K5, D1) see what a terminal delivers"
            )
        if self.service is not None:
            exported = ", ".join(sorted(self.service.environment)) or "nothing (an existing one is used)"
            lines.append(
                f"conformance: session service {self.service.spec} ready in "
                f"{self.service.start_seconds:.1f} s; exports {exported}"
            )
        lines.append(f"conformance: capabilities {json.dumps(under_test.capabilities, default=list)}")
        if self.section_d is not None and any(
            CATALOGUE[e.contract_id].section == "D" and e.status == "run" for e in self.plan
        ):
            lines.append(self.section_d.header(self.profile.name))
        lines += [
            f"conformance plan: {len(self.plan)} items: {len(run)} run, {len(limited)} limitation expected, "
            f"{len(excluded)} n/a",
        ]
        repeats = f"; each item runs {self.repeat} times" if self.repeat > 1 else ""
        if self.left_out:
            lines.append(
                f"conformance profile {self.profile.name}: {self.profile.description}; leaves out "
                f"{len(self.left_out)} situation(s) of {len(self.full_plan)} planned "
                f"(every one runs with --conformance-profile ci){repeats}"
            )
        else:
            lines.append(f"conformance profile {self.profile.name}: {self.profile.description}{repeats}")
        if under_test.kind == "strategy":
            lines.append(_p1_header(self.kit_options, self.profile))
            lines.append(f"conformance perturbation: {perturb_text(self.kit_options['perturb'])}")
        else:
            lines.append(_t9_header(self.kit_options))
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

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._owns_ledger:
            shutil.rmtree(self.ledger.directory, ignore_errors=True)

    def execute(self, spec: CheckSpec) -> CheckOutcome:
        """Run one check here and now (keeping its last journal when items repeat: a flaky item shows
        a passing and a failing run side by side)."""
        ctx = self.context_for(spec)
        outcome = CheckOutcome.of(functools.partial(spec.function, ctx))
        figure, bound = _figure_and_bound(outcome, ctx)
        hung = ctx.hung or any(result.outcome == "hang" for result in ctx.results)
        outcome = dataclasses.replace(outcome, figure=figure, bound=bound, phases=_phases(ctx), hung=hung)
        if outcome.verdict == "pass" and ctx.figures:  # a pass with figures of its own says them
            outcome = dataclasses.replace(outcome, reason="; ".join(f"measured {f}" for f in ctx.figures))
        if self.repeat > 1 and ctx.results:
            outcome = dataclasses.replace(outcome, timeline=render_timeline(list(ctx.results[-1].journal)))
        return outcome

    def outcome_for(self, entry: PlanEntry, spec: CheckSpec) -> CheckOutcome:
        """The outcome of ``entry``: a prerequisite's is settled once per run (see ``blocked_by``)."""
        if entry.contract_id in (*PREREQUISITES, *STALL_PREREQUISITES.values(), STARTUP_PREREQUISITE):
            return self.ledger.settle(entry.item_name, lambda: self.execute(spec))
        if entry.contract_id in _SIDE_BY_SIDE:
            siblings = [
                (planned.item_name, self._run_of(planned))
                for planned in self.plan
                if planned.contract_id in _SIDE_BY_SIDE
                and planned.status == "run"
                and planned.item_name in self.collected  # selected in this run (-k), not deselected
            ]
            return self.ledger.settle_side_by_side(entry.item_name, lambda: self.execute(spec), siblings)
        return self.execute(spec)

    def blocked_by(self, entry: PlanEntry) -> str | None:
        """Why ``entry`` cannot be judged (a prerequisite failed), or ``None``; settles the prerequisites
        first, in every situation the full plan runs, whatever the profile or ``-k`` selected."""
        cids = prerequisites_of(entry.contract_id)
        # A waived prerequisite is left out: the defect is known, its dependents still run.
        needed = [
            planned
            for planned in self.full_plan
            if planned.contract_id in cids
            and planned.status == "run"
            and self.waivers.find(planned.contract_id, planned.situation) is None
        ]
        stalls = stall_prerequisites_of(entry.contract_id)
        stalling = [  # a prerequisite that blocks only when its run hung
            planned
            for planned in self.full_plan
            if planned.contract_id in stalls
            and planned.status == "run"
            and self.waivers.find(planned.contract_id, planned.situation) is None
        ]
        # The stall prerequisites run beside the others (D4 mostly waits out the strategy's declared bound
        # while L1 starts the strategy): their outcomes count only once the others have passed, as before.
        with self.ledger.beside([(planned.item_name, self._run_of(planned)) for planned in stalling]):
            outcomes = self.ledger.settle_all([(p.item_name, self._run_of(p)) for p in needed])
        for planned in needed:  # the first failure in plan order, whichever process settled it
            outcome = outcomes[planned.item_name]
            if outcome.failed:
                where = f"{planned.contract_id} {planned.name} [{planned.situation}]"
                return f"blocked by {where}: {outcome.summary}"
        for planned in stalling:
            outcome = self.ledger.settle(planned.item_name, self._run_of(planned))
            if outcome.failed and outcome.hung:
                where = f"{planned.contract_id} {planned.name} [{planned.situation}]"
                return f"blocked by {where}: a runner side never gave up on the store: {outcome.summary}"
        return None

    def _run_of(self, planned: PlanEntry) -> Callable[[], CheckOutcome]:
        """Running ``planned``'s check here and now, for the ledger."""
        return functools.partial(self.execute, self.specs[(planned.contract_id, planned.situation)])

    def scenario_blocked_by(self, contract_id: str, scenario: Scenario) -> str | None:
        """Why ``scenario`` of ``contract_id`` cannot be judged (a bundle ends at its first step and E5's
        run in that situation hung: it would only wait out its hang bound), or ``None``; settles those E5
        situations once per run, like the prerequisites of ``blocked_by``."""
        for situation, bundle in startup_dependencies(contract_id, scenario):
            planned = next(
                (
                    entry
                    for entry in self.full_plan
                    if entry.contract_id == STARTUP_PREREQUISITE
                    and entry.situation == situation
                    and entry.status == "run"
                ),
                None,
            )
            if planned is None or self.waivers.find(planned.contract_id, situation) is not None:
                continue
            spec = self.specs[(planned.contract_id, situation)]
            outcome = self.ledger.settle(planned.item_name, functools.partial(self.execute, spec))
            if outcome.failed and outcome.hung:
                where = f"{planned.contract_id} {planned.name} [{situation}]"
                return (
                    f"blocked by {where}: in scenario {scenario.name!r} {bundle} ends or blocks in its "
                    f"first step, and a bundle failing at once hung execute(): {outcome.summary}"
                )
        return None

    def context_for(self, spec: CheckSpec) -> CheckContext:
        target, capabilities = self.under_test.target, self.under_test.capabilities
        if self.section_d is not None and CATALOGUE[spec.contract_id].section == "D":
            target, capabilities = self.section_d.target, self.section_d.capabilities
        return CheckContext(
            contract_id=spec.contract_id,
            situation=spec.situation,
            target=target,
            capabilities=capabilities,
            timeout_scale=self.timeout_scale,
            seed=self.seed,
            kit_options=self.kit_options,
            blocker=self.scenario_blocked_by,
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
        runs: list[str] = next(
            (json.loads(str(v)) for k, v in report.user_properties if k == "conformance_runs"), []
        )
        phases: dict[str, float] = next(
            (json.loads(str(v)) for k, v in report.user_properties if k == "conformance_phases"), {}
        )
        previous = self.results.get(item_name)
        if verdict is not None and report.when == "call":
            result = ItemResult(
                entry.contract_id,
                entry.name,
                entry.situation,
                verdict["verdict"],
                verdict["reason"],
                report.duration,
                tuple(runs),
                verdict.get("figure", ""),
                verdict.get("bound", ""),
                phases,
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
        self.written = write_report(self.report, path) if path else []
        certificate = self.config.getoption("conformance_certificate")
        if certificate:
            from conformance.certificate import build_certificate, write_certificate

            document = build_certificate(
                self.report,
                profile=self.profile,
                capabilities=self.under_test.capabilities,
                checks=self.checks,
                strategy_class=self.under_test.strategy_class,
            )
            write_certificate(document, certificate)
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
            profile=self.profile.name,
            left_out=list(self.left_out),
            repeat=self.repeat,
            flaky_fails=self.profile.flaky_fails,
            section_d=self.section_d.to_dict() if self.section_d is not None else {},
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
        if self.config.getoption("conformance_certificate"):
            path = self.config.getoption("conformance_certificate")
            terminalreporter.line(
                f"conformance certificate written to {path}; "
                f"verify it with python -m conformance verify {path}"
            )


def _p1_header(options: dict[str, Any], profile: Profile) -> str:
    """How P1 explores in this run (its profile decides how much is checked, so the header says it)."""
    if options.get("replay") is not None:
        return "conformance P1: replaying one scenario (--conformance-replay)"
    return f"conformance P1: {profile.name} profile, {profile.p1_text(options.get('examples'))}"


def _t9_header(options: dict[str, Any]) -> str:
    """How T9 explores in this run (how much it checks depends on it, so the header says it)."""
    from conformance.contracts.store_history import CI_BUDGET, CI_EXAMPLES

    if options.get("replay") is not None:
        return "conformance T9: replaying one workload (--conformance-replay) per access path"
    if options.get("examples"):
        return f"conformance T9: thorough profile, {options['examples']} workloads per access path"
    return f"conformance T9: CI profile, up to {CI_EXAMPLES} workloads within {CI_BUDGET:g} s per access path"


def _kit_options(config: pytest.Config, kind: Subject) -> dict[str, Any]:
    """The property check's options (P1 for a strategy, T9 for a store), validated up front: a bad
    value is a usage error naming it, before anything runs."""
    options: dict[str, Any] = {}
    examples = config.getoption("conformance_examples")
    if examples is not None:
        if examples < 1:
            raise pytest.UsageError(
                f"--conformance-examples {examples!r} must be a positive number of "
                + ("scenarios" if kind == "strategy" else "workloads")
            )
        options["examples"] = examples
    replay = config.getoption("conformance_replay")
    if replay:
        from conformance.schedules import scenario_from_json
        from conformance.store_workload import decode

        try:
            options["replay"] = scenario_from_json(replay) if kind == "strategy" else decode(replay)
        except ValueError as error:
            raise pytest.UsageError(f"conformance: {error}") from None
    return options


PHASES = ("sandbox", "start-up", "execute", "settle", "cleanup")


def _phases(ctx: CheckContext) -> dict[str, float]:
    """Seconds of this check's scenarios per phase, summed: ``sandbox`` (fork, build, snapshots, result
    transport), ``start-up`` (``execute()`` called until its last bundle started), ``execute`` (the rest
    of ``execute()``), ``settle`` (leak settle windows) and ``cleanup`` (the observer's helpers, survivors,
    kill). The kit's benchmark (``python -m bench.kit``) adds them up per contract and per run."""
    totals = dict.fromkeys(PHASES, 0.0)
    for result in ctx.results:
        measured = result.measurements
        wall = float(measured.get("observer_wall", 0.0) or 0.0)
        settle = float(measured.get("settle_seconds", 0.0) or 0.0)
        cleanup = float(measured.get("cleanup_seconds", 0.0) or 0.0)
        executing = sum(result.durations) or result.duration
        calls = [r.t for r in result.journal if r.bundle == "kit" and r.kind == "execute-start"]
        starts = [r.t for r in result.journal if r.kind == "start" and r.bundle != "kit"]
        startup = max(0.0, min(max(starts) - calls[0], executing)) if calls and starts else 0.0
        totals["start-up"] += startup
        totals["execute"] += executing - startup
        totals["settle"] += settle
        totals["cleanup"] += cleanup
        totals["sandbox"] += max(0.0, wall - executing - settle - cleanup)
    return {phase: round(seconds, 3) for phase, seconds in totals.items()} if ctx.results else {}


def _figure_and_bound(outcome: CheckOutcome, ctx: CheckContext) -> tuple[str, str]:
    """What an item measured and what it was held to: a failure's own figure against the contract's
    expectation; the figures a check measured itself (each names its bound); otherwise the slowest
    scenario's ``execute()`` time against its hang bound (a check without a scenario has neither)."""
    if outcome.verdict == "fail" and outcome.failure.get("figure"):
        return outcome.failure["figure"], outcome.failure.get("expected", "")
    if ctx.figures:
        return "; ".join(ctx.figures), "named with each figure"
    if not ctx.results:
        return "", ""
    slowest = max(ctx.results, key=lambda result: result.duration)
    return (
        f"execute() {slowest.duration:.3f} s (slowest of {len(ctx.results)} scenario(s))",
        f"hang bound {slowest.scenario.hang_bound * ctx.timeout_scale:g} s",
    )


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


_SIDE_BY_SIDE = ("D2", "D3")
"""Contracts whose situations run side by side (``PrerequisiteLedger.settle_side_by_side``): the first of
their items to run runs every other one's situation in threads beside its own, and those items report
what was settled. Their scenarios mostly wait out windows the strategy declares (D2's host-loss
detection, D3's partition tolerance and host-loss detection), each on test hosts of its own, so the waits
overlap instead of adding up (measured with ``python -m bench.kit``). D1's scenarios are not among them:
they are mostly the sides' start-up (interpreters importing the strategy), which side by side only share
the CPU. Dealt one after the other (``_LONGEST_FIRST``), their items land on one worker in the
contiguous batches pytest-xdist 3 deals; an item whose situation another worker is running waits for
that outcome."""

_LONGEST_FIRST = ("P1", "D2", "D3", "F3", "D1", "L7", "K3")
"""Contracts whose items take longest, longest first: P1 explores for a time budget, D2 and D3 wait out the
strategy's declared host-loss and partition windows, F3 starts every runner under each start method
(spawn imports everything afresh), D1 and L7 wait out declared grace periods (measured with
``python -m bench.kit``). Under pytest-xdist they are handed out first, in this order: xdist 3 deals its
first items in contiguous batches, so the long ones start first and the short ones fill in beside them,
instead of one worker ending the run alone on a long item drawn last."""


def _dealing_rank(entry: PlanEntry) -> int:
    """Where ``entry`` goes in the order xdist deals items: the ``_LONGEST_FIRST`` contracts first, in
    their order, then every other item."""
    try:
        return _LONGEST_FIRST.index(entry.contract_id)
    except ValueError:
        return len(_LONGEST_FIRST)


class ConformanceCollector(pytest.Collector):
    """The contract suite: one ``ContractItem`` per planned (contract, situation), in plan order (under
    pytest-xdist, the ``_LONGEST_FIRST`` contracts first, longest first; every worker collects the same
    order)."""

    def collect(self) -> list[pytest.Item]:
        session = _session(self.config)
        specs = {(s.contract_id, s.situation): s for s in session.checks}
        order = list(session.plan)
        if hasattr(self.config, "workerinput"):
            order.sort(key=_dealing_rank)  # stable: a contract's items keep their plan order
        return [
            ContractItem.from_parent(
                self, name=entry.item_name, spec=specs.get((entry.contract_id, entry.situation)), entry=entry
            )
            for entry in order
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

    def _record(self, verdict: str, reason: str, outcome: CheckOutcome | None = None) -> None:
        """The item's verdict, in ``user_properties``: one JSON property the controller reads, and the
        contract ID, situation, figure and bound as plain properties (JUnit XML shows them as is)."""
        figure, bound = (outcome.figure, outcome.bound) if outcome is not None else ("", "")
        self.user_properties.append(
            (
                VERDICT_PROPERTY,
                json.dumps(
                    {
                        "id": self.entry.contract_id,
                        "situation": self.entry.situation,
                        "verdict": verdict,
                        "reason": reason,
                        "figure": figure,
                        "bound": bound,
                    }
                ),
            )
        )
        self.user_properties += [
            ("conformance_contract", self.entry.contract_id),
            ("conformance_situation", self.entry.situation),
            ("conformance_figure", figure),
            ("conformance_bound", bound),
        ]

    def runtest(self) -> None:
        session = _session(self.config)
        if self.entry.status == "n/a" or self.spec is None:
            self._record("n/a", f"{self.entry.capability}: {self.entry.reason}")
            pytest.skip(f"n/a ({self.entry.capability}): {self.entry.reason}")
        cid, situation = self.entry.contract_id, self.entry.situation
        waiver = session.waivers.find(cid, situation)
        blocked = session.blocked_by(self.entry)
        if blocked is not None:
            self._record("blocked", blocked)
            pytest.fail(blocked, pytrace=False)
        started = time.monotonic()
        outcomes: list[CheckOutcome] = []
        try:
            for run in range(session.repeat):
                # The first run may be settled already (a prerequisite); repeats always run here.
                spec = self.spec
                outcomes.append(session.outcome_for(self.entry, spec) if run == 0 else session.execute(spec))
                if outcomes[-1].verdict in ("n/a", "limitation", "blocked"):
                    break  # decided by capabilities or a prerequisite: running again says nothing new
        finally:
            self.user_properties.append(("conformance_duration", f"{time.monotonic() - started:.3f}"))
            self.user_properties.append(("conformance_runs", json.dumps([o.verdict for o in outcomes])))
            phases: dict[str, float] = {}
            for outcome in outcomes:
                for phase, seconds in outcome.phases.items():
                    phases[phase] = round(phases.get(phase, 0.0) + seconds, 3)
            self.user_properties.append(("conformance_phases", json.dumps(phases)))
        passed = [o for o in outcomes if o.verdict == "pass"]
        failed = [o for o in outcomes if o.failed]
        if passed and failed:
            self._conclude_flaky(passed[0], failed[0], len(passed), len(outcomes), waiver)
        else:
            self._conclude(failed[0] if failed else outcomes[0], waiver)

    def _conclude_flaky(
        self, passed: CheckOutcome, failed: CheckOutcome, passes: int, runs: int, waiver: Any
    ) -> None:
        """An item that both passed and failed: ``flaky``, with a passing and a failing run's journals
        side by side; it fails the item when the profile says a flaky item fails the gate."""
        session = _session(self.config)
        reason = f"passed {passes}/{runs} runs; a failing run {failed.summary}"
        if waiver is not None:
            self._record("waived", waiver.reason)
            pytest.xfail(f"waived: {waiver.reason}")
        self._record("flaky", reason)
        failing = failed.contract_failed().render() if failed.verdict == "fail" else failed.error
        journals = render_side_by_side(
            ("a passing run", passed.timeline or "(no scenario journal)"),
            ("a failing run", failed.failure.get("timeline") or failed.timeline or "(no scenario journal)"),
        )
        text = (
            f"{self.entry.contract_id} {self.entry.name}: flaky: {reason}\n{failing}\n  journals:\n{journals}"
        )
        if session.profile.flaky_fails:
            pytest.fail(text, pytrace=False)
        self.warn(pytest.PytestWarning(text))

    def _conclude(self, outcome: CheckOutcome, waiver: Any) -> None:
        """Record ``outcome`` and end the item with the matching pytest outcome."""
        cid, situation = self.entry.contract_id, self.entry.situation
        if outcome.verdict == "blocked":
            self._record("blocked", outcome.reason)
            pytest.fail(outcome.reason, pytrace=False)
        if outcome.verdict == "fail":
            if waiver is not None:
                self._record("waived", waiver.reason, outcome)
                pytest.xfail(f"waived: {waiver.reason}")
            self._record("fail", outcome.summary, outcome)
            raise outcome.contract_failed()
        if outcome.verdict == "setup-error":
            # The kit could not drive the target: the cause is named, and no contract verdict is given.
            self._record("error", outcome.summary, outcome)
            pytest.fail(f"{outcome.summary}\n{outcome.error}", pytrace=False)
        if outcome.verdict == "error":
            # A check that breaks (or a sandbox error) is a failed item with its traceback, never a pass.
            self._record("fail", outcome.summary, outcome)
            pytest.fail(f"{outcome.summary}\n{outcome.error}", pytrace=False)
        if outcome.verdict == "n/a":
            self._record("n/a", outcome.summary, outcome)
            pytest.skip(f"n/a ({outcome.capability}): {outcome.reason}")
        if outcome.verdict == "limitation":
            self._record("limitation", outcome.summary, outcome)
            pytest.skip(f"limitation (declared: {outcome.capability}): {outcome.reason}")
        if waiver is not None:
            message = (
                f"waiver for {cid} is stale: {cid} now passes"
                f"{'' if waiver.situations is None else f' in {situation}'}; remove it"
            )
            self._record("fail", message, outcome)
            pytest.fail(message, pytrace=False)
        self._record("pass", outcome.reason, outcome)

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
