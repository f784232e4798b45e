"""Child script for the ``WorkerProcesses`` signal tests: signals must never reach pytest.

Usage: ``python processes_child.py MODE START_METHOD``. The test starts it in a session of its own and
drives it through stdout lines: the script prints ``ready {json}`` once every worker runs (handshake
over a pipe), and a final ``result {json}``.

- ``parent-death`` (F4): workers wait forever (one awaiting, one in blocking code); the test SIGKILLs
  this script and checks that the workers die too.
- ``group-sigint`` (K4): the test sends SIGINT to the whole group; this script stops the workers.
- ``second-sigint`` (K5): a worker ignores the event and the grace is long; the test sends SIGINT to
  this script, then a second one once the stop has begun (a worker prints ``saw-stop``).
- ``sigint-elsewhere`` (K5): as ``second-sigint``, but this script sends the second SIGINT itself, to a
  thread other than the main one, once the main thread waits inside ``stop()``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from agentlightning.execution.events import MultiprocessingEvent, wait_async
from agentlightning.execution.processes import WorkerProcesses

HANG = 60.0


async def awaits_forever(journal: Connection) -> None:
    journal.send(os.getpid())
    await asyncio.sleep(HANG * 10)


async def blocks_forever(journal: Connection) -> None:
    journal.send(os.getpid())
    while True:
        time.sleep(0.05)


async def waits_for_event(journal: Connection, event: MultiprocessingEvent) -> None:
    journal.send(os.getpid())
    await wait_async(event)


async def ignores_event(journal: Connection, event: MultiprocessingEvent) -> None:
    async def announce_stop() -> None:
        await wait_async(event)
        print("saw-stop", flush=True)

    watcher = asyncio.get_running_loop().create_task(announce_stop())
    journal.send(os.getpid())
    try:
        await asyncio.sleep(HANG * 10)
    finally:
        watcher.cancel()


def _interrupt_another_thread() -> None:
    """Once the main thread blocks in the stop's wait, deliver a SIGINT to this thread instead of it."""
    main = threading.main_thread().ident
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main or 0)
        stack = []
        while frame is not None:
            stack.append(frame.f_code.co_name)
            frame = frame.f_back
        if stack and stack[0] == "select" and "_wait_until" in stack:
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            return
        time.sleep(0.001)  # polling the main thread's stack: no event to wait on there


def main(mode: str, start_method: str) -> None:
    ctx = multiprocessing.get_context(start_method)
    event = MultiprocessingEvent(ctx)
    reader, writer = ctx.Pipe(duplex=False)
    grace = HANG if mode in ("second-sigint", "sigint-elsewhere") else 1.0
    workers = WorkerProcesses(event, start_method=start_method, graceful_timeout=grace, terminate_timeout=1.0)
    targets: list[tuple[Any, tuple[Any, ...]]]
    if mode == "parent-death":
        targets = [(awaits_forever, (writer,)), (blocks_forever, (writer,))]
    elif mode == "group-sigint":
        targets = [(waits_for_event, (writer, event)), (waits_for_event, (writer, event))]
    else:
        targets = [(ignores_event, (writer, event))]
    for index, (target, args) in enumerate(targets):
        workers.start(f"worker-{index}", target, *args)
    pids = []
    for _ in targets:
        if not reader.poll(HANG):
            raise SystemExit("workers never reported")
        pids.append(reader.recv())
    result: dict[str, Any] = {}
    try:
        print("ready " + json.dumps({"pids": pids}), flush=True)
        if mode == "parent-death":
            signal.pause()  # until the test kills us
        while workers.running:
            workers.wait()
    except KeyboardInterrupt:
        result["first"] = "KeyboardInterrupt"
    if mode == "sigint-elsewhere":
        threading.Thread(target=_interrupt_another_thread, name="interrupted", daemon=True).start()
    began = time.monotonic()
    try:
        workers.stop()
        result["stop"] = "returned"
    except KeyboardInterrupt:
        result["stop"] = "KeyboardInterrupt"
    result["stop_seconds"] = time.monotonic() - began
    result["outcomes"] = [
        {"name": o.name, "status": o.status, "exitcode": o.exitcode, "error": repr(o.error)}
        for o in workers.outcomes
    ]
    workers.close()
    event.close()
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
