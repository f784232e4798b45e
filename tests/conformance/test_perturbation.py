"""The scheduling perturbation: seeded (same seed, same delays), bounded, installed only while asked for,
and carried by P1 scenarios through their replay form into the scenario process."""

from __future__ import annotations

import sys
import threading

import pytest

from conformance.perturbation import PATCHED, Perturbation, active, delay_plan, installed
from conformance.scenarios import Scenario, Script, Step
from conformance.schedules import ScheduleBounds, scenario_from_json, scenario_json, scenario_source


def test_the_same_seed_gives_the_same_delay_plan_and_another_seed_another() -> None:
    perturbation = Perturbation(seed=7, rate=0.5, max_delay=0.01)
    plan = delay_plan(perturbation, 200)
    assert plan == delay_plan(perturbation, 200)
    assert plan != delay_plan(Perturbation(seed=8, rate=0.5, max_delay=0.01), 200)
    assert all(0.0 <= delay <= 0.01 for delay in plan)
    assert 50 <= sum(delay > 0 for delay in plan) <= 150  # about half the racing points are delayed


def test_no_rate_means_no_delay() -> None:
    assert set(delay_plan(Perturbation(seed=3, rate=0.0, max_delay=0.03), 100)) == {0.0}


def test_hooks_and_the_switch_interval_are_in_place_only_inside_the_block() -> None:
    before = {(owner, name): getattr(owner, name) for owner, name, _, _ in PATCHED}
    interval = sys.getswitchinterval()
    perturbation = Perturbation(seed=1, rate=1.0, max_delay=0.001, switch_interval=1e-4)
    with installed(perturbation) as delayer:
        assert delayer is not None
        assert all(getattr(owner, name) is not before[(owner, name)] for owner, name, _, _ in PATCHED)
        assert sys.getswitchinterval() == pytest.approx(1e-4)
        event = threading.Event()
        thread = threading.Thread(target=event.set)
        thread.start()  # delayed before the start, and event.set() / the start handshake after
        assert event.wait(5.0)
        thread.join(5.0)
        assert delayer.delays >= 3  # rate 1.0: every racing point hit is delayed
    assert {(owner, name): getattr(owner, name) for owner, name, _, _ in PATCHED} == before
    assert sys.getswitchinterval() == interval


def test_hooks_are_removed_when_the_block_raises() -> None:
    before = threading.Event.set
    with pytest.raises(RuntimeError), installed(Perturbation(seed=1, rate=1.0, max_delay=0.001)):
        raise RuntimeError("scenario failed")
    assert threading.Event.set is before


def test_none_installs_nothing() -> None:
    before = threading.Thread.start
    with installed(None) as delayer:
        assert delayer is None
        assert threading.Thread.start is before


@pytest.mark.parametrize(("field", "value"), [("rate", 1.5), ("max_delay", -0.1), ("switch_interval", 0.0)])
def test_bad_values_are_errors_naming_the_value(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Perturbation(**{field: value})  # type: ignore[arg-type]


def test_the_perturbation_round_trips_through_the_replay_and_pasteable_forms() -> None:
    scenario = Scenario(
        name="P1",
        algorithm=Script((Step("poll", 0.01),)),
        perturbation=Perturbation(seed=5, rate=0.3, max_delay=0.01, switch_interval=1e-4),
    )
    assert scenario_from_json(scenario_json(scenario)) == scenario
    assert "perturbation=Perturbation(seed=5, rate=0.3" in scenario_source(scenario)
    plain = Scenario(name="P1")
    assert scenario_from_json(scenario_json(plain)).perturbation is None


def _drawn_perturbations(perturb: bool) -> list[Perturbation | None]:
    from hypothesis import HealthCheck, given, seed, settings

    from conformance.capabilities import validate_manifest
    from conformance.schedules import scenarios

    caps = validate_manifest({"uses_processes": False, "can_cancel_blocking_code": False})
    drawn: list[Perturbation | None] = []

    @settings(max_examples=40, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(0)
    @given(scenarios(caps, ScheduleBounds(perturb=perturb)))
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario.perturbation)

    collect()
    return drawn


def test_p1_draws_perturbations_only_when_asked() -> None:
    assert set(_drawn_perturbations(False)) == {None}
    assert sum(p is not None for p in _drawn_perturbations(True)) >= 10


def test_a_perturbed_scenario_runs_in_the_sandbox_and_its_journal_says_so() -> None:
    from conformance.sandbox import run_scenario
    from conformance.target import make_target, validate_target

    target = validate_target(make_target("shm")).target
    scenario = Scenario(
        name="perturbed",
        n_runners=2,
        algorithm=Script((Step("sleep", 0.05), Step("set_event"))),
        runners=(Script((Step("poll"),)),),
        perturbation=Perturbation(seed=2, rate=1.0, max_delay=0.005, switch_interval=1e-4),
    )
    result = run_scenario(target, scenario)
    assert result.outcome == "returned", result
    kit = [record for record in result.journal if record.bundle == "kit"]
    kinds = [record.kind for record in kit]
    assert "perturbation" in kinds and "perturbation-removed" in kinds
    removed = next(record for record in kit if record.kind == "perturbation-removed")
    assert int(removed.detail.split()[0]) > 0  # racing points were hit and delayed


def test_each_racing_point_draws_from_its_own_seeded_stream() -> None:
    from conformance.perturbation import POINTS

    perturbation = Perturbation(seed=11, rate=0.5, max_delay=0.01)
    plans = {point: delay_plan(perturbation, 50, point) for point in POINTS}
    assert plans == {point: delay_plan(perturbation, 50, point) for point in POINTS}
    assert len({tuple(plan) for plan in plans.values()}) == len(POINTS)  # independent streams
    only = Perturbation(seed=11, rate=0.5, max_delay=0.01, points=("store-call",))
    assert delay_plan(only, 50, "store-call") == plans["store-call"]  # the other points change nothing
    assert set(delay_plan(only, 50, "event-set")) == {0.0}  # a point left out is never delayed


def test_unknown_racing_points_are_errors_naming_them() -> None:
    with pytest.raises(ValueError, match=r"\['thread-join'\] are not racing points"):
        Perturbation(points=("thread-start", "thread-join"))
    with pytest.raises(ValueError, match="'bogus' is not a racing point"):
        delay_plan(Perturbation(), 1, "bogus")


def test_the_points_round_trip_and_a_replayed_scenario_draws_the_same_delays() -> None:
    perturbation = Perturbation(seed=9, rate=0.6, max_delay=0.02, points=("event-set", "store-call"))
    scenario = Scenario(name="P1", perturbation=perturbation)
    replayed = scenario_from_json(scenario_json(scenario)).perturbation
    assert (
        replayed == perturbation and replayed is not None and replayed.points == ("event-set", "store-call")
    )
    for point in ("event-set", "store-call"):
        assert delay_plan(replayed, 30, point) == delay_plan(perturbation, 30, point)


def test_a_store_call_through_the_wrapper_is_delayed_once_and_its_locks_are_racing_points() -> None:
    import asyncio

    from agentlightning.store import threaded
    from agentlightning.store.memory import InMemoryLightningStore
    from agentlightning.store.threaded import ThreadedLightningStore

    perturbation = Perturbation(seed=4, rate=1.0, max_delay=0.001, points=("store-call", "store-lock"))
    original_lock = threaded._new_lock
    original_call = InMemoryLightningStore.__dict__["enqueue_rollout"]
    with installed(perturbation) as delayer:
        assert delayer is not None
        wrapper = ThreadedLightningStore(InMemoryLightningStore())
        asyncio.run(wrapper.enqueue_rollout(input={"x": 1}))
        assert delayer.counts["store-call"] == 1  # the wrapper's call, not again for the inner store's
        assert threaded._new_lock is not original_lock
        with wrapper._owner_lock:  # the wrapper's locks are made by the hook while perturbed
            pass
        assert delayer.counts["store-lock"] == 1
        wrapper.close_sync()
    assert threaded._new_lock is original_lock
    assert InMemoryLightningStore.__dict__["enqueue_rollout"] is original_call


def test_the_first_await_of_a_bundle_is_a_racing_point_only_while_installed() -> None:
    import asyncio

    from conformance.perturbation import active, bundle_started

    asyncio.run(bundle_started())  # nothing installed: a no-op
    with installed(Perturbation(seed=1, rate=1.0, max_delay=0.001, points=("bundle-start",))) as delayer:
        assert active() is delayer and delayer is not None
        asyncio.run(bundle_started())
        assert delayer.counts == {**dict.fromkeys(delayer.counts, 0), "bundle-start": 1}
        assert delayer.summary() == "1 delays (bundle-start 1)"
    assert active() is None


def test_the_fixed_catalogue_gets_a_low_rate_perturbation_only_under_all_and_never_in_p1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conformance import sandbox
    from conformance.checks import CheckContext
    from conformance.perturbation import CATALOGUE_RATE, catalogue_perturbation
    from conformance.target import make_target, validate_target

    ran: list[Scenario] = []

    def fake_run(target: object, scenario: Scenario, **_: object) -> object:
        ran.append(scenario)
        from conformance.scenarios import ScenarioResult

        return ScenarioResult(scenario=scenario, outcome="returned", duration=0.0)

    monkeypatch.setattr(sandbox, "run_scenario", fake_run)
    resolved = validate_target(make_target("shm"))
    for mode in ("off", "p1", "all"):
        for contract in ("L2", "P1"):
            ctx = CheckContext(
                contract,
                "default",
                resolved.target,
                resolved.capabilities,
                seed=3,
                kit_options={"perturb": mode},
            )
            ctx.run(Scenario(name="x"))
    drawn = [scenario.perturbation for scenario in ran]
    assert drawn[:4] == [None] * 4 and drawn[5] is None  # off, p1, and P1 under all
    assert drawn[4] == catalogue_perturbation("L2:default:0", 3)
    assert drawn[4] is not None and drawn[4].rate == CATALOGUE_RATE and drawn[4].max_delay <= 0.005
    assert catalogue_perturbation("L2:default:1", 3) != drawn[4]  # each scenario of an item its own


def test_a_store_call_resumed_in_another_context_ends_cleanly() -> None:
    """The ipc server runs a call eagerly up to its first suspension, then resumes it in a task of its own
    (another context): the perturbed call must still end as the store's own would."""
    import asyncio
    import contextvars

    from agentlightning.store.ipc import _continue
    from agentlightning.store.memory import InMemoryLightningStore

    store = InMemoryLightningStore()
    rollout = asyncio.run(store.enqueue_rollout(input={"x": 1}))

    async def drive() -> None:
        coro = store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=0.05)  # suspends in it
        suspended = contextvars.copy_context().run(coro.send, None)  # eagerly, in a context of its own

        async def resume() -> None:  # as the server's own task does (_finish)
            await _continue(coro, suspended)

        await asyncio.get_running_loop().create_task(resume())

    with installed(Perturbation(seed=1, rate=1.0, max_delay=0.001, points=("store-call",))) as delayer:
        asyncio.run(drive())
        assert delayer is not None and delayer.counts["store-call"] == 1


def test_each_bundle_draws_its_own_delays_whatever_the_others_drew_before_it() -> None:
    """A replay delays the same calls of each bundle by the same amounts: the delays of a bundle's store
    calls come from its own stream, not from one handed out in the order the threads arrive."""
    import asyncio

    from conformance.perturbation import bundle_started

    perturbation = Perturbation(seed=13, rate=0.5, max_delay=0.001, points=("store-call",))

    async def bundle(name: str, draws: int) -> list[float]:
        await bundle_started(name)
        delayer = active()
        assert delayer is not None
        return [delayer.draw("store-call") for _ in range(draws)]

    async def both(first: str, second: str) -> dict[str, list[float]]:
        drawn = await asyncio.gather(bundle(first, 20), bundle(second, 20))  # a task (context) each
        return {first: drawn[0], second: drawn[1]}

    with installed(perturbation):
        in_order = asyncio.run(both("runner 0", "runner 1"))
    with installed(perturbation):
        reversed_order = asyncio.run(both("runner 1", "runner 0"))
    with installed(perturbation) as delayer:
        unowned = [delayer.draw("store-call") for _ in range(20)]  # type: ignore[union-attr]
    assert in_order == reversed_order  # whoever came first
    for name, delays in in_order.items():
        assert delays == delay_plan(perturbation, 20, "store-call", owner=name)
    assert in_order["runner 0"] != in_order["runner 1"]
    assert unowned == delay_plan(perturbation, 20, "store-call", owner="MainThread")  # the thread's own


def test_a_racing_point_hit_again_during_a_draw_on_the_same_thread_is_not_delayed_and_does_not_hang() -> None:
    """A signal handler that hits a racing point mid-draw (a SIGINT handler waking its loop through
    call_soon_threadsafe sends on a socket) finds the draw's lock held by its own thread: the inner hit goes
    undelayed instead of deadlocking, which hung execute() after a Ctrl+C in P1's scenarios."""
    import conformance.perturbation as perturbation_module

    perturbation = Perturbation(seed=5, rate=1.0, max_delay=0.001, points=("socket-send",))
    inner: list[float] = []
    original_stream = perturbation_module._stream

    with installed(perturbation) as delayer:
        assert delayer is not None

        def stream_that_reenters(*args: object, **kwargs: object) -> object:
            inner.append(
                delayer.draw("socket-send")
            )  # under the delayer's lock, as a signal handler would be
            return original_stream(*args, **kwargs)  # type: ignore[arg-type]

        done = threading.Event()
        outer: list[float] = []

        def draw_once() -> None:
            outer.append(delayer.draw("socket-send"))
            done.set()

        perturbation_module._stream = stream_that_reenters  # type: ignore[assignment]
        try:
            thread = threading.Thread(target=draw_once, daemon=True)
            thread.start()
            assert done.wait(30.0), "a re-entered draw deadlocked"
            thread.join(30.0)
        finally:
            perturbation_module._stream = original_stream
    assert inner and set(inner) == {0.0}  # every stream made (this thread's start hits some too)
    assert outer[0] > 0
