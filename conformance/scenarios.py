"""Scenarios as plain data: what each bundle does, which faults the kit delivers, and what came out.

A ``Scenario`` is picklable and printable; the sandbox turns it into scripted bundles (``bundles.py``),
runs ``execute()`` on it and returns a ``ScenarioResult`` with the outcome, the journal and the leak
report. Contract checks (``contracts/``) and the property-based generator (``P1``) both speak this model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from conformance.perturbation import Perturbation

__all__ = [
    "STEP_KINDS",
    "ExceptionInfo",
    "Fault",
    "JournalRecord",
    "LeakReport",
    "Scenario",
    "ScenarioResult",
    "Script",
    "Step",
    "StoreFault",
    "Target",
]

STEP_KINDS = frozenset(
    {
        "sleep",  # await asyncio.sleep(seconds), cooperative
        "poll",  # poll event.is_set() until set or `seconds` pass; journals saw-stop when set
        "wait_event",  # block in event.wait(seconds) from a worker thread of the kit (sync protocol)
        "set_event",  # event.set()
        "store",  # a store operation, see Step.args["op"]
        "raise",  # raise an exception of type args["type"] (builtin or a kit error type) with args["message"]
        "keyboard_interrupt",  # raise KeyboardInterrupt
        "ignore_event",  # await for `seconds` without looking at the event (to be cancelled: L6)
        "block",  # time.sleep(seconds): stuck in sync code, no await (L7)
        "ignore_cancel",  # swallow CancelledError for `seconds` before giving up (non-cooperation)
        "exit",  # raise SystemExit(args["code"])
        "gate",  # wait until the kit opens gate args["name"] (fault delivered), then continue
        "return",  # return normally at once
        "event_protocol",  # exercise set/clear/is_set/wait of the event and journal what each did (L5)
        "probe",  # journal the listening sockets of the bundle's session (R3 re-binds them afterwards)
    }
)


@dataclass(frozen=True)
class Step:
    """One step of a bundle's script."""

    kind: str
    seconds: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {self.kind!r}; known: {sorted(STEP_KINDS)}")


@dataclass(frozen=True)
class Script:
    """The steps one bundle runs, in order; after the last step the bundle returns."""

    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Fault:
    """A fault the kit delivers from outside the bundles once a gate (journal condition) is reached.

    ``action``: ``sigint-main`` (SIGINT to the process that called ``execute()``), ``sigint-group``
    (SIGINT to its whole process group, as a terminal's Ctrl+C), ``sigkill-worker`` (SIGKILL to the
    process that runs runner ``worker``), ``sigkill-parent`` (SIGKILL to the process that called
    ``execute()``), ``open-gate`` (no signal: only opens ``open_gate``, to order bundles by the
    journal). ``after``: the journal condition, e.g. ``"runner 1 started"``, ``"all started"``,
    ``"algorithm returned"``, ``"event set"``, ``"before start"``. ``repeat`` delivers it again (K5).
    """

    action: Literal["sigint-main", "sigint-group", "sigkill-worker", "sigkill-parent", "open-gate"]
    after: str
    worker: int = 0
    repeat: int = 1
    open_gate: str | None = None  # gate name to open once delivered


@dataclass(frozen=True)
class StoreFault:
    """A fault in the store as one bundle sees it, through the kit's store proxy (S4, S5)."""

    bundle: str  # "algorithm" or "runner <i>"
    method: str  # store method name, e.g. "dequeue_rollout"
    call: int = 1  # which call (1-based) is affected
    raises: str | None = None  # exception type name to raise, or None
    delay: float = 0.0  # latency added before the call


@dataclass(frozen=True)
class Target:
    """What is under test, as strings resolvable in any process (so it survives spawn)."""

    strategy: str  # alias, dotted path or module:Class; "" when a store alone is under test (section T)
    options: dict[str, Any] = field(default_factory=dict)
    store_factory: str = "agentlightning.store.memory:InMemoryLightningStore"
    start_method: str | None = None  # multiprocessing start method to set in the sandbox, if any
    store_options: dict[str, Any] = field(default_factory=dict)  # keywords of the store factory


@dataclass(frozen=True)
class Scenario:
    """One run (or ``repeat`` runs) of ``execute()`` with scripted bundles and scheduled faults."""

    name: str
    n_runners: int = 1
    algorithm: Script = Script()
    runners: tuple[Script, ...] = ()  # one per worker; a single script is used by every worker
    faults: tuple[Fault, ...] = ()
    store_faults: tuple[StoreFault, ...] = ()
    repeat: int = 1
    hang_bound: float = 30.0  # seconds before the sandbox is killed and the run reported as a hang
    settle: float = 2.0  # leak settle window, polled
    # S3/S6: when True the sandbox, after execute() (and after its leak snapshot), describes the store
    # object it passed to execute() with ``conformance.store_snapshot.describe_caller_store(store)`` and
    # puts the dict in ``ScenarioResult.caller_store`` (its type, id, pid and every rollout it holds).
    inspect_caller_store: bool = False
    # P1: the seeded scheduling perturbation installed in the scenario process while execute() runs
    perturbation: Perturbation | None = None

    def runner_script(self, worker_id: int) -> Script:
        if not self.runners:
            return Script()
        return self.runners[worker_id] if len(self.runners) > 1 else self.runners[0]


@dataclass(frozen=True)
class JournalRecord:
    """One line of the cross-process journal."""

    t: float  # time.monotonic() (system-wide on Linux), seconds
    pid: int
    thread: str
    bundle: str  # "algorithm", "runner 0", ..., "kit"
    kind: str  # start, step, saw-stop, cancelled, finally-ran, exception, end, fault, ...
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExceptionInfo:
    """What ``execute()`` raised, as text that survives the sandbox boundary."""

    type_name: str  # qualified, e.g. "builtins.ValueError"
    message: str
    traceback: str
    notes: tuple[str, ...] = ()
    cause: ExceptionInfo | None = None


@dataclass(frozen=True)
class LeakReport:
    """What ``execute()`` left behind, each entry naming the offending object."""

    threads: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    zombies: tuple[str, ...] = ()
    fds: tuple[str, ...] = ()
    sockets: tuple[str, ...] = ()
    ipc: tuple[str, ...] = ()  # semaphores, shared memory, resource_tracker warnings
    temp_files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # ResourceWarning, unraisable exceptions, never-awaited coroutines
    asyncio: tuple[str, ...] = ()  # pending tasks, unclosed loops
    caller_state: tuple[str, ...] = ()  # signal handlers, start method, event loop, logging
    rss_growth_bytes: int = 0

    def empty(self) -> bool:
        return not any(
            (
                self.threads,
                self.processes,
                self.zombies,
                self.fds,
                self.sockets,
                self.ipc,
                self.temp_files,
                self.warnings,
                self.asyncio,
                self.caller_state,
            )
        )


@dataclass(frozen=True)
class ScenarioResult:
    """Everything observed about one scenario run."""

    scenario: Scenario
    outcome: Literal["returned", "raised", "hang", "crashed"]
    duration: float  # execute() wall time, seconds (last run when repeated)
    exception: ExceptionInfo | None = None
    journal: tuple[JournalRecord, ...] = ()
    leaks: LeakReport = LeakReport()
    stacks: str = ""  # every thread of every process in the group, when the run hung
    exit_status: int | None = None  # sandbox process exit status when it crashed
    stderr: str = ""
    durations: tuple[float, ...] = ()  # one per repeat
    measurements: dict[str, Any] = field(default_factory=dict)  # rss per repeat, fd counts, latencies
    # Filled only when ``scenario.inspect_caller_store``: ``describe_caller_store(store)`` of the store
    # object the sandbox passed to execute(), taken after execute() returned or raised (S3, S6).
    caller_store: dict[str, Any] = field(default_factory=dict)
