"""``cs``: the algorithm serves the store over HTTP; runner processes, on this machine or others, use it.

Roles. ``"both"`` (default): everything on this machine - the store server (a thread), one side on the
main thread, the other side in worker processes. ``main_process="algorithm"`` (default) keeps the algorithm
on the main thread, against the caller's store, and starts ``n_runners`` runner processes, each with an
``HttpLightningStore``; ``main_process="runner"`` (one runner) keeps the runner on the main thread and runs
the algorithm in a process. ``"algorithm"``: serve the store and the stop event, run the algorithm, nothing
else. ``"runner"``: connect to ``server_host:server_port`` and run ``n_runners`` runner processes. The
caller's store holds every write afterwards (S3) on the serving side. Process machinery (start methods,
escalation, reaping, worker death, parent death) is ``processes.py``; the run's state machine is
``supervisor.py``.

Stop model: ``supervisor.Supervisor``'s (L1-L7, E1-E6, F1, F4, K1-K5), on each machine. What ``cs`` adds:

- Any bundle sets the event: on another machine too, through the server's ``/v1/event`` routes (L4).
- A taken port is a ``ServerBindError`` naming host and port before any process is started (F2). A runner
  role that cannot reach its server fails within ``connect_timeout`` with host and port in the message.
- Across machines: a runner side relays its bundles' own ``event.set()`` to the server, but not its own
  end, failure or Ctrl+C (those stop that machine only); it stops when the server's event is set (its
  ``event_bridge.EventBridge`` holds a 2 s long-poll on it, answered at once when it is set: D1). A server
  unreachable for ``connect_timeout`` (link cut, algorithm machine down) fails the runner side with
  ``StoreServerUnreachable`` naming its address (D3). The algorithm side keeps serving, after its stop,
  until attached runner sides detach (at most ``graceful_timeout + 2 * terminate_timeout + 1`` seconds),
  so they finish their last writes.
- The main thread's own bundle, stuck in blocking code, can only be interrupted by Ctrl+C (as any Python
  program's main thread); bundles in processes always can.

Authentication is always on: the server answers only requests carrying its token. With none given
(``server_token`` / ``AGL_SERVER_TOKEN``), role ``"both"`` makes a random one per run and hands it to its
own runner processes, so no other local process can read the store, inject rollouts or set the stop
event. Roles ``"algorithm"`` and ``"runner"`` run on different machines and must share one: it is
required there. TLS is optional (``tls_cert`` / ``tls_key`` on the serving side, ``tls_ca`` on runner
sides; see ``agentlightning/store/http/security.py``). The token never appears in logs, errors or reprs.

Claims of a runner that is gone (T3). Each runner's client names itself to the server (``runner-<i>``;
on a runner machine ``<side>/runner-<i>``, ``side`` being that machine's ``execute()``), and the server
records, per name, the attempts each runner claims (``store.claims``); the supervisor gives up those
of a local runner process that ended, as its stop model says. A runner machine reports the end of its
own runner processes to the server (``POST /v1/claims/release``), which gives up their claims the same
way. A runner machine lost altogether (host down, link cut) stops polling the stop event: once its last
poll is ``host_loss_timeout`` old (default ``connect_timeout + 5`` s), the serving side gives up the
attempts its runners held and follows ``on_host_loss``: ``"raise"`` stops the run with
``RunnerHostLost`` naming the host and runners, ``"carry-on"`` goes on with the other machines (D2).
``host_loss_timeout`` exceeds ``connect_timeout`` so that a runner side cut off for good has failed
before its attempts are retried elsewhere. The store's unresponsive window
(``RolloutConfig.unresponsive_seconds``) stays the backstop for a runner whose loop is stuck.

Default start method (``start_method=None``): each worker process is forked from the caller when the
caller has a single thread, else it comes from the forkserver (see ``processes``, whose docstring says
why forked workers cost less CPU per request on both ends). ``start()`` arranges it as ``ipc`` does: the
server's socket is bound first (so a taken port still fails before any process starts, F2), the workers
are started next, and the server's threads last; a forked worker closes its copy of the listening socket
first thing, so it never keeps the port bound nor accepts a connection. W1 with 2 runners, 10,000
rollouts, alternating with forkserver runners at load 3.5 on 2 cores: 618 us of CPU per rollout against
727 (caller 259 against 308, runners 359 against 423; median of 3 pairs).

Local workers' transport (role ``"both"``): the server also listens on a Unix domain socket in a private
directory (mode 0700, ``socket_dirs``: removed afterwards, and swept by a later run when a killed caller
left it), and this machine's worker processes send their requests there; still HTTP, still under the
run's token. Runner sides on other machines (roles ``"algorithm"`` / ``"runner"``) use TCP, and so does
everyone when TLS is configured. A Unix socket costs both ends less per request than TCP over loopback:
W1 as above, 590 us of CPU per rollout against 620 with TCP (median of 4 alternating pairs, load 5).
Both together, ``python -m bench.strategies --strategy cs --runners 2 --w1-repeats 7``, alternating with
forkserver runners on TCP (7 pairs, load 3.4 to 8.7): W1 2,561 rollouts/s against 2,086 (ratio 1.23).

What is lost when the algorithm's process dies: with an in-memory store, everything - the queue, every
rollout, attempt, span and resource lives in that process. Local runner processes die with it (F4);
runner sides on other machines fail within about ``connect_timeout`` with an error naming the server's
address. A durable store, which would survive it, is planned but does not exist yet.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar, Literal

from agentlightning import event_loops
from agentlightning.env import (
    AGL_CURRENT_ROLE,
    AGL_SERVER_HOST,
    AGL_SERVER_PORT,
    managed_store_setting,
)
from agentlightning.execution.base import AlgorithmBundle, RunnerBundle
from agentlightning.execution.client_server_workers import PRELOAD, run_algorithm, run_runner
from agentlightning.execution.event_bridge import EventBridge
from agentlightning.execution.processes import (
    WorkerDied,
    WorkerOutcome,
    start_forkserver,
    start_method_now,
    validate_start_method,
    validate_timeout,
)
from agentlightning.execution.remote_stop import RunnerSides, SilentSide, stop_event_routes
from agentlightning.execution.supervisor import (
    WORKER_PROCESS_CAPABILITIES,
    SupervisedStrategy,
    Supervisor,
    WorkerSpec,
)
from agentlightning.execution.threads import run_on_private_loop
from agentlightning.store.base import LightningStore
from agentlightning.store.claims import ClaimLedger, ClaimTrackingStore
from agentlightning.store.http.client import HttpLightningStore
from agentlightning.store.http.security import (
    ServerTLS,
    generate_token,
    is_loopback,
    resolve_ca,
    resolve_server_tls,
    resolve_token,
)
from agentlightning.store.http.server import LightningStoreServer
from agentlightning.store.threaded import ThreadedLightningStore

__all__ = ["ClientServerExecutionStrategy", "RunnerHostLost"]

# Marked as ours: a Ctrl+C that arrives in this module's frames is deferred to bundle code (see threads).
_KEYBOARD_INTERRUPT_PROTECTED = True

_log = logging.getLogger(__name__)

Role = Literal["algorithm", "runner", "both"]
_ROLES: tuple[str, ...] = ("algorithm", "runner", "both")
_MAIN_PROCESS: tuple[str, ...] = ("algorithm", "runner")
_HOST_LOSS_POLICIES = ("raise", "carry-on")
_SIDE_WATCH_SECONDS = 0.25  # how often the serving side looks for runner sides that fell silent


class RunnerHostLost(WorkerDied):
    """A runner machine fell silent (host down, link cut) for longer than ``host_loss_timeout``.

    Names the address it polled from, its side and the runners whose attempts were given up.
    """

    def __init__(self, address: str | None, side: str, workers: list[str], silent_seconds: float) -> None:
        self.address, self.side, self.workers, self.silent_seconds = (
            address,
            side,
            list(workers),
            silent_seconds,
        )
        self.name, self.pid, self.exitcode = (workers[0] if workers else side), None, None
        held = ", ".join(workers) if workers else "none of its runners held an attempt"
        RuntimeError.__init__(
            self,
            f"runner host {address or '(unknown address)'} (side {side}) was lost: no word from it for "
            f"{silent_seconds:.1f} s; the attempts of its runners were given up ({held})",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.address, self.side, self.workers, self.silent_seconds))


class ClientServerExecutionStrategy(SupervisedStrategy):
    """The store behind an HTTP server, runners in processes; see the module docstring for the stop model.

    ``role``: ``"algorithm"``, ``"runner"`` or ``"both"`` (``None``: ``AGL_CURRENT_ROLE``, default
    ``"both"``). ``server_host`` / ``server_port``: where the algorithm side listens and runners connect
    (``None``: ``AGL_SERVER_HOST`` / ``AGL_SERVER_PORT``, default ``127.0.0.1`` / ``0``; port 0 binds an
    ephemeral port that local runners learn; the ``"runner"`` role needs a real port). The host is honoured
    exactly. ``server_token``: the shared token (``None``: ``AGL_SERVER_TOKEN``; at least 16 characters;
    required by roles ``"algorithm"`` and ``"runner"`` and by a non-loopback host, made per run
    otherwise). ``tls_cert`` / ``tls_key``: serve HTTPS with this PEM certificate and key (``None``:
    ``AGL_SERVER_TLS_CERT`` / ``AGL_SERVER_TLS_KEY``); ``tls_ca``: the PEM CA bundle runners verify the
    server with (``None``: ``AGL_SERVER_TLS_CA``, else the system's; on role ``"runner"`` it also means
    the server speaks HTTPS). ``n_runners``: runner processes (>= 1).
    ``main_process``: which side of ``"both"`` stays on the main thread. ``graceful_timeout`` /
    ``terminate_timeout``: the escalation bounds. ``managed_store``: ``True`` serves the caller's store
    (``None``: ``AGL_MANAGED_STORE``, default on); ``False`` only works where bundles need no server (the
    ``"runner"`` role handed an ``HttpLightningStore``), since an in-memory store cannot be shared with
    other processes. ``start_method``: ``fork``, ``spawn`` or ``forkserver``; ``None`` forks each worker
    while the caller has a single thread, else uses ``processes.default_start_method()``.
    ``connect_timeout``: how long a runner side retries an unreachable server before failing.
    ``host_loss_timeout``: how long the serving side waits for word from a runner side (each polls the
    stop event every 2 s) before counting its machine lost (default ``connect_timeout + 5``; it must
    exceed ``connect_timeout + 2``). ``on_host_loss``: then ``"raise"`` (stop the run; ``execute()`` raises
    ``RunnerHostLost``, a ``WorkerDied`` naming the host and its runners) or ``"carry-on"`` (go on with
    the other runners). Either way the attempts its runners held are given up first.
    """

    alias: ClassVar[str] = "cs"
    capability_manifest: ClassVar[dict[str, Any]] = {
        **WORKER_PROCESS_CAPABILITIES,
        # Section D: the algorithm side serves the store on host 0; runner sides connect to it.
        "runs_on_many_hosts": True,
        "host_sides": {
            "algorithm": {
                "options": {"role": "algorithm", "server_host": "{address}", "server_port": "{port}"},
                "env": {"AGL_SERVER_TOKEN": "{token}"},
            },
            "runner": {
                "options": {"role": "runner", "server_host": "{algorithm_address}", "server_port": "{port}"},
                "env": {"AGL_SERVER_TOKEN": "{token}"},
            },
        },
        # Section D's test hosts are one machine's namespaces on a switch with no latency: D2-D4 check
        # these bounds (late_store 4 s, partition 2 s, host_loss 9 s) rather than waiting out the
        # production defaults. Still realistic on a loaded machine: a 1 s cut (D3) heals within TCP's
        # retransmissions, a lost side has missed 3 polls of the event (every 2 s) before it is given up.
        "host_test_options": {"connect_timeout": 4.0, "host_loss_timeout": 7.0},
    }

    def __init__(
        self,
        role: Role | None = None,
        server_host: str | None = None,
        server_port: int | None = None,
        n_runners: int = 1,
        graceful_timeout: float = 1.0,
        terminate_timeout: float = 1.0,
        main_process: Literal["algorithm", "runner"] = "algorithm",
        managed_store: bool | None = None,
        start_method: str | None = None,
        connect_timeout: float = 10.0,
        server_token: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        host_loss_timeout: float | None = None,
        on_host_loss: Literal["raise", "carry-on"] = "raise",
    ) -> None:
        role = AGL_CURRENT_ROLE.get("both") if role is None else role  # type: ignore[assignment]
        if role not in _ROLES:
            raise ValueError(f"role must be one of {', '.join(_ROLES)}; got {role!r}")
        server_host = AGL_SERVER_HOST.get("127.0.0.1") if server_host is None else server_host
        if not isinstance(server_host, str) or not server_host.strip():
            raise ValueError(f"server_host must be a non-empty host name or address; got {server_host!r}")
        server_port = AGL_SERVER_PORT.get(0) if server_port is None else server_port
        if isinstance(server_port, bool) or not isinstance(server_port, int) or not 0 <= server_port <= 65535:
            raise ValueError(f"server_port must be an integer from 0 to 65535; got {server_port!r}")
        if role == "runner" and server_port == 0:
            raise ValueError(
                "server_port must name the algorithm side's port for role 'runner' (0 means ephemeral, which "
                "only local runners can learn); set server_port or AGL_SERVER_PORT"
            )
        if isinstance(n_runners, bool) or not isinstance(n_runners, int) or n_runners < 1:
            raise ValueError(f"n_runners must be an int >= 1; got {n_runners!r}")
        if main_process not in _MAIN_PROCESS:
            raise ValueError(f"main_process must be 'algorithm' or 'runner'; got {main_process!r}")
        if main_process == "runner" and (role != "both" or n_runners != 1):
            raise ValueError(
                f"main_process='runner' needs role='both' and n_runners=1 (one runner can own the main "
                f"thread); got role={role!r}, n_runners={n_runners!r}"
            )
        managed_store = managed_store_setting(managed_store)
        if not managed_store and role == "both":
            raise ValueError(
                "managed_store=False cannot work with cs role 'both': runner processes cannot share the "
                "caller's in-memory store; they reach it only through the server (use managed_store=True)"
            )
        token = resolve_token(server_token, "server_token")
        if token is None and role != "runner" and not is_loopback(server_host.strip()):
            raise ValueError(
                f"server_host={server_host!r} is not a loopback address: serving the store there needs a "
                f"shared token, so that only your runners can reach it; set AGL_SERVER_TOKEN (or "
                f"server_token) on this machine and on every runner machine"
            )
        if token is None and (role == "algorithm" or (role == "runner" and managed_store)):
            raise ValueError(
                f"role {role!r} needs the token the algorithm and runner sides share (they run in "
                f"different processes or machines); set server_token or AGL_SERVER_TOKEN on both sides"
            )
        connect = validate_timeout(connect_timeout, "connect_timeout")
        if connect <= 0:
            raise ValueError(f"connect_timeout must be > 0 seconds; got {connect_timeout!r}")
        self.role: Role = role
        self.server_host = server_host.strip()
        self.server_port = server_port
        self.n_runners = n_runners
        self.graceful_timeout = validate_timeout(graceful_timeout, "graceful_timeout")
        self.terminate_timeout = validate_timeout(terminate_timeout, "terminate_timeout")
        self.main_process: Literal["algorithm", "runner"] = main_process
        self.managed_store = managed_store
        self.start_method = None if start_method is None else validate_start_method(start_method)
        self.connect_timeout = connect
        if host_loss_timeout is None:
            loss = connect + EventBridge.POLL_SECONDS + 3.0
        else:
            loss = validate_timeout(host_loss_timeout, "host_loss_timeout")
        if loss <= connect + EventBridge.POLL_SECONDS:
            raise ValueError(
                f"host_loss_timeout must be longer than connect_timeout + {EventBridge.POLL_SECONDS:g} s "
                f"(a runner side gives up an unreachable server before the server gives up the side); got "
                f"host_loss_timeout={host_loss_timeout!r} with connect_timeout={connect_timeout!r}"
            )
        if on_host_loss not in _HOST_LOSS_POLICIES:
            raise ValueError(f"on_host_loss must be 'raise' or 'carry-on'; got {on_host_loss!r}")
        self.host_loss_timeout = loss
        self.on_host_loss: Literal["raise", "carry-on"] = on_host_loss
        self.server_token = token  # None: a fresh one per run (role "both"); never in the repr
        self.tls: ServerTLS | None = resolve_server_tls(tls_cert, tls_key) if role != "runner" else None
        self.tls_ca = resolve_ca(tls_ca)

    @property
    def capabilities(self) -> dict[str, Any]:
        return {
            **super().capabilities,
            "late_store_seconds": self.connect_timeout,  # D4: a runner side waits this long for the store
            # D2: a silent side is given up once its last poll is host_loss_timeout old.
            "host_loss_seconds": self.host_loss_timeout + EventBridge.POLL_SECONDS,
            "host_loss_policy": self.on_host_loss,
            # D3: a cut shorter than this heals within TCP's retransmissions, well before either side's bound.
            "partition_seconds": self.connect_timeout / 2,
        }

    @property
    def server_url(self) -> str:
        host = f"[{self.server_host}]" if ":" in self.server_host else self.server_host
        scheme = "https" if self.tls is not None or self.tls_ca is not None else "http"
        return f"{scheme}://{host}:{self.server_port}"

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        """Run this machine's side to completion; raise as the module docstring's stop model says."""
        _Execution(self, algorithm, runner, store).run()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(role={self.role!r}, server_host={self.server_host!r}, "
            f"server_port={self.server_port}, n_runners={self.n_runners}, "
            f"main_process={self.main_process!r}, "
            f"graceful_timeout={self.graceful_timeout}, terminate_timeout={self.terminate_timeout}, "
            f"start_method={self.start_method!r}, host_loss_timeout={self.host_loss_timeout}, "
            f"on_host_loss={self.on_host_loss!r}, tls={self.tls is not None})"
        )


# -- what the parent hands its worker processes (they run ``client_server_workers``) ---------------------


def _call_runner(runner: RunnerBundle, store: LightningStore, worker_id: int, event: Any) -> Any:
    return lambda: runner(store, worker_id, event)


def _runner_store(client: HttpLightningStore, name: str, managed: bool) -> LightningStore:
    """A runner process's store: ``client`` naming itself ``name``, keeping its claims alive (managed)."""
    named = client.named(name)
    if not managed:
        return named  # the caller's type, as S6 requires; the server still knows who claims what
    return ClaimTrackingStore(named, client=name, heartbeats=True, close_inner=True)


def _served_store(store: LightningStore) -> ThreadedLightningStore | None:
    """A wrapper for a store the server thread and the main thread cannot share as is; else ``None``."""
    if getattr(store, "thread_safe", False):
        return None  # the caller's own object: the server writes straight into it (S3)
    return ThreadedLightningStore(store)


async def _check_reachable(client: HttpLightningStore) -> None:
    try:
        await client.health()
    finally:
        await client.close()


# -- one execute() --------------------------------------------------------------------------------------


class _Execution(Supervisor[ClientServerExecutionStrategy]):
    """One ``execute()`` on this machine: the store served over HTTP (or reached, on a runner side), the
    event bridged across machines, runner sides watched for host loss."""

    label = "cs"
    server: LightningStoreServer | None = None
    bridge: EventBridge | None = None
    side_watch: threading.Thread | None = None
    side_watch_stop: threading.Event
    runner_sides: RunnerSides  # remote runner sides attached to the server (D2)

    # -- starting ---------------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.s
        if s.role == "runner":
            client = self._runner_side_client()
            self.bridge = self._make_bridge(client)
            # Runners before the bridge's thread, as on the serving side (forked while single-threaded).
            self._start_runners(client, f"{self.bridge.side}/", s.managed_store)
            self.bridge.start()
            return
        if s.role == "both" and start_method_now(s.start_method) == "forkserver":
            # Its interpreter boots and imports while the server is made and bound, not after.
            start_forkserver(PRELOAD)
        wrapper = _served_store(self.store)
        served = self.served = wrapper or self.store
        self.close_served = None if wrapper is None else wrapper.close_sync
        self.claims = ClaimLedger()
        # Authentication is always on: a token of this run only, unless the runner sides share one.
        token = s.server_token if s.server_token is not None else generate_token()
        tls = s.tls
        self.runner_sides = RunnerSides()
        # This machine's own workers reach the server through a Unix socket in a private directory (see
        # the module docstring); with TLS they use TCP, as runner sides on other machines always do.
        unix_socket = None
        if s.role == "both" and tls is None:
            unix_socket = self.make_socket()
        # Served through the ledger: it records which runner (CLIENT_HEADER) claims what.
        server = self.server = LightningStoreServer(
            ClaimTrackingStore(served, ledger=self.claims),
            s.server_host,
            s.server_port,
            token=token,
            tls_cert=tls.cert if tls is not None else None,
            tls_key=tls.key if tls is not None else None,
            routes=stop_event_routes(self.event, self.runner_sides),
            graceful_seconds=min(s.graceful_timeout, 1.0),
            unix_socket=unix_socket,
        )
        # Bound before anything is started: a taken port fails here, naming host and port (F2).
        server.bind()
        client = HttpLightningStore(
            server.url,
            token=token,
            retry_seconds=s.connect_timeout,
            tls_ca=s.tls_ca if tls is not None else None,
            unix_socket=unix_socket,
        )
        teardown = max(s.terminate_timeout, 1.0)
        event = self.event
        # Worker processes first, the server's threads after: under the default start method they are
        # forked while nothing of ours is threaded yet (see the module docstring). Their requests wait
        # in the listening socket's backlog until the server serves; none of them holds that socket.
        if s.role == "algorithm" or s.main_process == "algorithm":
            algorithm = self.algorithm
            self.main_run = self.main_bundle(
                "algorithm",
                lambda: algorithm(served, event),
                sets_event_on_return=True,
                teardown_timeout=teardown,
            )
            if s.role == "both":
                self._start_runners(client, "", managed=True)
        else:
            # Its claims go by the name a runner process's would; given up as soon as its bundle ends.
            own = ClaimTrackingStore(served, ledger=self.claims, client="runner-0", heartbeats=True)
            self.main_run = self.main_bundle(
                "runner 0",
                _call_runner(self.runner, own, 0, event),
                sets_event_on_return=False,
                teardown_timeout=teardown,
                after=own.give_up,
            )
            spec = WorkerSpec("algorithm", run_algorithm, (self.algorithm, client, event))
            self.start_workers(
                [spec], start_method=s.start_method, preload=PRELOAD, close_in_child=server.sockets
            )
        server.start()
        local = f" (local workers: {unix_socket})" if unix_socket is not None else ""
        _log.info("cs: serving the store at %s%s (role %s)", server.url, local, s.role)
        self.side_watch_stop = threading.Event()
        self.side_watch = threading.Thread(target=self._watch_sides, name="agl-cs-side-watch", daemon=True)
        self.side_watch.start()

    def _make_bridge(self, client: HttpLightningStore) -> EventBridge:
        return EventBridge(client, self.event)

    def _start_runners(self, client: HttpLightningStore, prefix: str, managed: bool) -> None:
        """Runner processes ``runner-<i>``, each with a store naming itself ``<prefix>runner-<i>``."""
        specs = (
            WorkerSpec(
                f"runner-{i}",
                run_runner,
                (self.runner, _runner_store(client, f"{prefix}runner-{i}", managed), i, self.event),
                # Most of a runner's CPU is its HTTP client and event loop: uvloop's where installed.
                loop_factory=event_loops.new_event_loop,
            )
            for i in range(self.s.n_runners)
        )
        close = self.server.sockets if self.server is not None else ()
        self.start_workers(specs, start_method=self.s.start_method, preload=PRELOAD, close_in_child=close)

    def _runner_side_client(self) -> HttpLightningStore:
        s = self.s
        if not s.managed_store:
            if not isinstance(self.store, HttpLightningStore):
                raise ValueError(
                    f"managed_store=False hands runner processes the caller's store, but a "
                    f"{type(self.store).__name__} cannot be shared with other processes; pass an "
                    f"HttpLightningStore or use managed_store=True"
                )
            client = self.store
        else:
            client = HttpLightningStore(
                s.server_url, token=s.server_token, retry_seconds=s.connect_timeout, tls_ca=s.tls_ca
            )
        # Fail here, within connect_timeout, naming host and port - not in every runner later.
        run_on_private_loop(_check_reachable(client))
        return client

    # -- supervising ------------------------------------------------------------------------------------

    async def give_up(self, outcomes: list[WorkerOutcome]) -> None:
        """On the serving side through the ledger; a runner machine asks the server (best effort: a
        release the server does not get is covered by its final sweep and the unresponsive window)."""
        if self.bridge is None:
            await super().give_up(outcomes)
        else:
            await self.bridge.release([f"{self.bridge.side}/{outcome.name}" for outcome in outcomes])

    def stop_here(self) -> None:
        """Set the event for this machine's bundles only: on a runner side, a local failure, Ctrl+C or
        the end of our runners is not the algorithm's business (only a bundle's own ``set()`` is relayed).
        """
        if self.bridge is not None:
            self.bridge.mute()
        self.event.set()

    def _watch_sides(self) -> None:
        """Serving side: a runner side silent for ``host_loss_timeout`` is lost (D2). The attempts its
        runners held are given up (their rollouts retried as their ``RolloutConfig`` says); then
        ``on_host_loss``: ``"raise"`` stops the run and ``execute()`` raises ``RunnerHostLost``,
        ``"carry-on"`` goes on with the other runners."""
        server, claims, served = self.server, self.claims, self.served
        assert server is not None and claims is not None and served is not None
        while not self.side_watch_stop.wait(_SIDE_WATCH_SECONDS):
            for lost in self.runner_sides.silent(self.s.host_loss_timeout):
                self._lost_side(lost, claims, served)

    def _lost_side(self, lost: SilentSide, claims: ClaimLedger, served: LightningStore) -> None:
        """A runner side fell silent: give up its runners' attempts, then follow ``on_host_loss``."""
        clients = [name for name in claims.clients() if name.startswith(f"{lost.side}/")]
        why = f"is on runner host {lost.address}, silent for {lost.silent_seconds:.1f} s"
        for name in clients:
            try:
                run_on_private_loop(claims.give_up(served, name, why))
            except Exception as exc:  # the final sweep tries again
                self.failures.record_cleanup_error(exc, f"giving up the attempts of {name}")
        workers = [name.rsplit("/", 1)[-1] for name in clients]
        error = RunnerHostLost(lost.address, lost.side, workers, lost.silent_seconds)
        if self.s.on_host_loss == "raise":
            self.failures.record(error, "runner host")
            self.stop_here()
        else:
            _log.warning("cs: %s; carrying on with the other runners", error)

    # -- stopping ---------------------------------------------------------------------------------------

    def stop_services(self) -> None:
        """The bridge, then (serving side) the runner sides' last writes, the side watch and the server."""
        if self.bridge is not None:
            self.step("stopping the event bridge", self.bridge.stop)
            if self.bridge.lost is not None and "lost-server" not in self.recorded:
                # The server is unreachable past connect_timeout: this runner side fails, naming it (D3).
                self.recorded.add("lost-server")
                self.failures.record(self.bridge.lost, "the runner side's event bridge")
        if self.server is not None and self.runner_sides.attached:
            # Remote runner sides still use the store while they stop: serve them for as long as our own
            # runners would get (they detach when done), but not longer.
            bound = self.s.graceful_timeout + 2 * self.s.terminate_timeout + 1.0
            try:
                left = self.runner_sides.wait_detached(bound)
            except KeyboardInterrupt:
                self.ladder.escaped()
            else:
                if left:
                    _log.warning(
                        "cs: runner sides %s did not detach within %.1f s; stopping anyway", left, bound
                    )
        if self.side_watch is not None:
            self.side_watch_stop.set()
            self.step("stopping the runner-side watch", self.side_watch.join)
        if self.server is not None:
            self.step("stopping the store server", self.server.stop)
