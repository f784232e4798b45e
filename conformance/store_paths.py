"""The access paths a store is checked through, and the concurrent clients that call it.

Section T reaches a store the ways the project's own code does: ``in-process`` (the object itself),
``threaded`` (``ThreadedLightningStore``, what strategies hand to threads), ``http`` (``LightningStoreServer``
and ``HttpLightningStore``) and ``ipc`` (``IpcStoreServer`` and ``IpcLightningStore``). ``open_path`` opens
one of them in a sandbox process; ``run_clients`` then starts client programs together, each in a thread
with its own event loop or in a process (``http`` and ``ipc`` only), each with its own handle on the path,
and returns what each returned or raised.

Client processes come from ``ClientProcesses``, forked before the store exists while the sandbox process
is still single-threaded: forking once servers run would copy their threads' locks in whatever state they
are. A store that declares ``thread_safe: False`` is never called from two threads at once: on the
``in-process`` path its thread clients run as tasks of the caller's loop, and the other paths get it
through a ``ThreadedLightningStore``, as the reference strategies serve it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import pickle
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from typing import Any, Literal

from conformance.catalogue import ACCESS_PATHS
from conformance.journal import write_record

__all__ = [
    "ACCESS_PATHS",
    "PATH_MODULES",
    "AccessPath",
    "Client",
    "ClientOutcome",
    "ClientProcesses",
    "ClientProgram",
    "open_path",
    "run_clients",
]

ClientProgram = Callable[..., Awaitable[Any]]
"""``async def program(store, *args) -> value``; module-level when it runs in a process (it is pickled)."""

PATH_MODULES: Mapping[str, tuple[str, ...]] = {
    "in-process": (),
    "threaded": ("agentlightning.store.threaded",),
    "http": ("agentlightning.store.threaded", "agentlightning.store.http"),
    "ipc": ("agentlightning.store.threaded", "agentlightning.store.ipc"),
}
"""What each path imports: the sandbox's zygote imports it ahead, so each check starts warm."""

_SOCKETS = itertools.count()  # numbers the ipc sockets this process opens
_GO_BOUND = 60.0  # seconds a client waits for the start signal before giving up (a hung coordinator)


@dataclass(frozen=True)
class Client:
    """One client: ``await program(store, *args)`` in a thread (its own event loop) or in a process."""

    program: ClientProgram
    args: tuple[Any, ...] = ()
    where: Literal["thread", "process"] = "thread"


@dataclass(frozen=True)
class ClientOutcome:
    """What one client's program did. ``where`` is ``thread``, ``process`` or ``task`` (a thread client of
    a store that is not thread-safe, run on the caller's loop). Times are ``time.monotonic()``, which is
    system-wide on Linux, so outcomes of different processes compare directly."""

    index: int
    where: str
    pid: int
    thread: str
    value: Any = None
    error: BaseException | None = None
    traceback: str = ""
    started: float = 0.0
    ended: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


# -- paths --------------------------------------------------------------------------------------------


class AccessPath:
    """One way of reaching the store, open in this process.

    ``store`` is the handle for the opener's own event loop; ``handle()`` makes one for a client (a new
    connection for ``http`` and ``ipc``; a process client gets it pickled). ``processes`` says whether a
    client in another process can reach the store this way.
    """

    name: str = ""
    processes: bool = False
    owns_handles: bool = False  # handle() makes a new client each time, to be closed by its user

    def __init__(self, store: Any, *, thread_safe: bool) -> None:
        self.raw = store
        self.thread_safe = thread_safe
        self.store: Any = store
        self._wrapper: Any = None

    @property
    def confined(self) -> bool:
        """Thread clients must run as tasks of the caller's loop (a store that is not thread-safe)."""
        return False

    def _served(self) -> Any:
        """The store a server thread may call: the store itself when thread-safe, else a wrapper."""
        if self.thread_safe:
            return self.raw
        from agentlightning.store.threaded import ThreadedLightningStore

        self._wrapper = ThreadedLightningStore(self.raw)
        return self._wrapper

    async def open(self) -> None:
        """Start what the path needs (server, wrapper)."""

    def handle(self) -> Any:
        """A handle for one client."""
        return self.store

    async def close(self) -> None:
        """Stop what ``open`` started; the store itself is the caller's to close."""
        if self._wrapper is not None:
            await self._wrapper.close()


class _InProcess(AccessPath):
    name = "in-process"

    @property
    def confined(self) -> bool:
        return not self.thread_safe


class _Threaded(AccessPath):
    name = "threaded"

    async def open(self) -> None:
        from agentlightning.store.threaded import ThreadedLightningStore

        self._wrapper = self.store = ThreadedLightningStore(self.raw)


class _Served(AccessPath):
    """A path through a server in this process and its client: ``http`` and ``ipc``."""

    processes = True
    owns_handles = True

    def _serve(self, served: Any) -> tuple[Any, Callable[[], Any]]:
        """Start a server for ``served``; (the server, a maker of clients for it)."""
        raise NotImplementedError

    @staticmethod
    def _stop(server: Any) -> None:
        raise NotImplementedError

    async def open(self) -> None:
        self._server, self._client = await asyncio.to_thread(self._serve, self._served())
        self.store = self.handle()

    def handle(self) -> Any:
        return self._client()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.close()
        await asyncio.to_thread(self._stop, self._server)
        await super().close()


class _Http(_Served):
    name = "http"

    def _serve(self, served: Any) -> tuple[Any, Callable[[], Any]]:
        from agentlightning.store.http import HttpLightningStore, LightningStoreServer

        server = LightningStoreServer(served, port=0)
        server.start()
        return server, lambda: HttpLightningStore(server.url)

    @staticmethod
    def _stop(server: Any) -> None:
        server.stop()


class _Ipc(_Served):
    name = "ipc"

    def _serve(self, served: Any) -> tuple[Any, Callable[[], Any]]:
        from agentlightning.store.ipc import IpcLightningStore, IpcStoreServer

        # The sandbox's private TMPDIR is short enough for a Unix socket path (108 bytes); one socket per
        # path opened, as a check may open several at once (T9: a fresh store per workload).
        name = f"store-{next(_SOCKETS)}.sock"
        server = IpcStoreServer(served, os.path.join(tempfile.gettempdir(), name))
        server.start()
        return server, lambda: IpcLightningStore(server.path)

    @staticmethod
    def _stop(server: Any) -> None:
        server.close()


_PATHS: dict[str, type[AccessPath]] = {
    path.name: path for path in (_InProcess, _Threaded, _Http, _Ipc) if path.name in ACCESS_PATHS
}


@contextlib.asynccontextmanager
async def open_path(name: str, store: Any, *, thread_safe: bool) -> AsyncIterator[AccessPath]:
    """Reach ``store`` through the access path ``name`` for the block (call from a running loop)."""
    try:
        path = _PATHS[name](store, thread_safe=thread_safe)
    except KeyError:
        raise ValueError(f"unknown access path {name!r}; known: {', '.join(_PATHS)}") from None
    await path.open()
    try:
        yield path
    finally:
        await path.close()


# -- client processes ---------------------------------------------------------------------------------


@dataclass
class _Worker:
    pid: int
    requests: Connection  # parent -> worker
    replies: Connection  # worker -> parent


class ClientProcesses:
    """``count`` client processes forked now (call before the store is built, with no thread running).

    Each serves one program at a time (``run_clients`` sends them) until ``close()``. They journal their
    start, so a hang's stack dump covers them, and they live in the caller's process group, so the
    sandbox's kill reaches them.
    """

    def __init__(self, count: int, *, journal_path: str, directory: str) -> None:
        if threading.active_count() != 1:
            raise RuntimeError("ClientProcesses must be forked before any thread is started")
        self.workers: list[_Worker] = []
        for index in range(count):
            requests_r, requests_w = Pipe(duplex=False)
            replies_r, replies_w = Pipe(duplex=False)
            pid = os.fork()
            if pid == 0:  # the client process: serve programs until the parent closes the pipe
                code = 0
                try:
                    for worker in self.workers:  # others' ends: their EOF must not wait for us
                        worker.requests.close()
                        worker.replies.close()
                    requests_w.close()
                    replies_r.close()
                    _serve_programs(index, requests_r, replies_w, journal_path, directory)
                except BaseException:
                    traceback.print_exc()
                    code = 70
                os._exit(code)
            requests_r.close()
            replies_w.close()
            self.workers.append(_Worker(pid, requests_w, replies_r))
        self._free = list(self.workers)

    def take(self, count: int) -> list[_Worker]:
        """``count`` idle workers, now busy until ``give_back`` (concurrent ``run_clients`` calls never
        share one)."""
        if count > len(self._free):
            raise ValueError(
                f"{count} process clients asked, {len(self._free)} of {len(self.workers)} client "
                "processes idle"
            )
        taken, self._free = self._free[:count], self._free[count:]
        return taken

    def give_back(self, workers: Sequence[_Worker]) -> None:
        self._free.extend(workers)

    def close(self, timeout: float = 10.0) -> None:
        """End every client process (EOF on its request pipe) and reap it; SIGKILL past ``timeout``."""
        for worker in self.workers:
            worker.requests.close()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while True:
                pid, _ = os.waitpid(worker.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() >= deadline:
                    with contextlib.suppress(OSError):
                        os.kill(worker.pid, signal.SIGKILL)
                    os.waitpid(worker.pid, 0)
                    break
                time.sleep(0.005)
            worker.replies.close()
        self.workers = []


def _serve_programs(
    index: int, requests: Connection, replies: Connection, journal_path: str, directory: str
) -> None:
    from conformance.bundles import register_stack_dump

    register_stack_dump(directory)
    write_record(journal_path, f"client process {index}", "start")
    while True:
        try:
            message = requests.recv()
        except EOFError:
            return
        _, client_index, program, handle, args = message
        replies.send(("ready",))
        if requests.recv()[0] != "go":
            return
        replies.send(("done", _run_program(client_index, "process", program, handle, True, args)))


def _run_program(
    index: int, where: str, program: ClientProgram, handle: Any, owned: bool, args: tuple[Any, ...]
) -> ClientOutcome:
    """Run one client program on a fresh event loop of this thread (closing ``handle`` if ``owned``)."""
    value: Any = None
    error: BaseException | None = None
    text = ""
    started = ended = 0.0

    async def main() -> Any:
        nonlocal started, ended
        started = time.monotonic()
        try:
            return await program(handle, *args)
        finally:
            ended = time.monotonic()
            if owned:
                with contextlib.suppress(Exception):
                    await handle.close()

    try:
        value = asyncio.run(main())
    except BaseException as exc:  # the program's failure is its outcome, whatever it is
        error, text = exc, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if where == "process":
        error = _transportable(error)
        try:
            pickle.dumps(value)
        except Exception as exc:
            value, error = None, RuntimeError(f"the client's value does not pickle: {exc}")
    return ClientOutcome(
        index, where, os.getpid(), threading.current_thread().name, value, error, text, started, ended
    )


def _transportable(error: BaseException | None) -> BaseException | None:
    """``error`` itself when it survives pickling (the store's own ``ValueError``), else its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__module__}.{type(error).__qualname__}: {error}")
    return error


# -- running clients ----------------------------------------------------------------------------------


async def run_clients(
    path: AccessPath, clients: Sequence[Client], processes: ClientProcesses | None = None
) -> list[ClientOutcome]:
    """Run every client at once through ``path`` and return their outcomes, in ``clients`` order.

    Clients start together: each gets its handle and its event loop first, and only once all are ready
    does any program begin. Thread clients of a store that is not thread-safe run as tasks of the caller's
    loop instead (``where="task"``). A process client needs ``path.processes`` and a free worker of
    ``processes``. A program that hangs hangs this call: the sandbox's hang bound reports it, with stacks.
    """
    in_processes = [i for i, client in enumerate(clients) if client.where == "process"]
    if in_processes and not path.processes:
        raise ValueError(f"the {path.name} path cannot be reached from another process")
    if in_processes and processes is None:
        raise ValueError(f"{len(in_processes)} process clients asked, no client processes forked")
    workers = processes.take(len(in_processes)) if processes is not None else []
    try:
        return await _run_together(path, clients, in_processes, workers)
    finally:
        if processes is not None:
            processes.give_back(workers)


async def _run_together(
    path: AccessPath, clients: Sequence[Client], in_processes: list[int], workers: list[_Worker]
) -> list[ClientOutcome]:
    go = threading.Event()
    outcomes: dict[int, Awaitable[ClientOutcome]] = {}
    ready: list[threading.Event] = []
    tasks: list[tuple[int, Client]] = []
    for slot, index in enumerate(in_processes):
        client = clients[index]
        workers[slot].requests.send(("run", index, client.program, path.handle(), client.args))
    for index, client in enumerate(clients):
        if client.where == "process":
            continue
        if path.confined:
            tasks.append((index, client))
            continue
        handle = path.handle()
        started = threading.Event()
        ready.append(started)
        future: concurrent.futures.Future[ClientOutcome] = concurrent.futures.Future()
        thread = threading.Thread(
            target=_thread_client,
            args=(index, client, handle, path.owns_handles, started, go, future),
            name=f"store-client-{index}",
            daemon=True,
        )
        thread.start()
        outcomes[index] = asyncio.wrap_future(future)

    def all_ready() -> None:
        for slot in range(len(in_processes)):
            workers[slot].replies.recv()  # ("ready",)
        for event in ready:
            event.wait(_GO_BOUND)

    try:
        await asyncio.to_thread(all_ready)
    finally:
        go.set()
        for slot in range(len(in_processes)):
            workers[slot].requests.send(("go",))
    for slot, index in enumerate(in_processes):
        outcomes[index] = asyncio.ensure_future(asyncio.to_thread(_reply, workers[slot]))
    for index, client in tasks:
        outcomes[index] = asyncio.ensure_future(_task_client(index, client, path.store))
    return [await outcomes[index] for index in range(len(clients))]


def _reply(worker: _Worker) -> ClientOutcome:
    kind, outcome = worker.replies.recv()
    assert kind == "done", kind
    return outcome  # type: ignore[no-any-return]


def _thread_client(
    index: int,
    client: Client,
    handle: Any,
    owned: bool,
    started: threading.Event,
    go: threading.Event,
    future: concurrent.futures.Future[ClientOutcome],
) -> None:
    started.set()
    go.wait(_GO_BOUND)
    future.set_result(_run_program(index, "thread", client.program, handle, owned, client.args))


async def _task_client(index: int, client: Client, store: Any) -> ClientOutcome:
    started = time.monotonic()
    try:
        value = await client.program(store, *client.args)
    except Exception as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return ClientOutcome(
            index, "task", os.getpid(), threading.current_thread().name, None, exc, text, started,
            time.monotonic(),
        )  # fmt: skip
    return ClientOutcome(
        index,
        "task",
        os.getpid(),
        threading.current_thread().name,
        value,
        None,
        "",
        started,
        time.monotonic(),
    )
