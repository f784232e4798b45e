"""``FailureCollector``: which failure an ``execute()`` raises (E3, E4, E6, K1-K5 ranking)."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from agentlightning.execution.failures import FailureCollector


def _raised(collector: FailureCollector) -> BaseException:
    with pytest.raises(BaseException) as info:
        collector.raise_first()
    return info.value


def _notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def test_nothing_recorded_returns() -> None:
    collector = FailureCollector()
    assert collector.primary is None
    collector.raise_first()


def test_E1_original_object_and_traceback_reraised() -> None:
    collector = FailureCollector()
    try:
        raise ValueError("boom")
    except ValueError as exc:
        original = exc
        tb = exc.__traceback__
    collector.record(original, "algorithm")
    raised = _raised(collector)
    assert raised is original
    # The original frames are still in the traceback chain, below the re-raise.
    frames = []
    node = raised.__traceback__
    while node is not None:
        frames.append(node.tb_frame.f_code.co_name)
        node = node.tb_next
    assert tb is not None and tb.tb_frame.f_code.co_name in frames


def test_E3_first_error_wins_later_attached_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    collector = FailureCollector()
    first, second = ValueError("first"), RuntimeError("second")
    collector.record(first, "runner 1")
    collector.record(second, "algorithm")
    with caplog.at_level(logging.DEBUG, logger="agentlightning.execution.failures"):
        raised = _raised(collector)
    assert raised is first
    if sys.version_info >= (3, 11):
        assert _notes(first) == ["also failed: algorithm: RuntimeError: second"]
    assert "algorithm: RuntimeError: second" in caplog.text


def test_E3_same_exception_recorded_twice_counts_once() -> None:
    collector = FailureCollector()
    exc = ValueError("x")
    collector.record(exc, "runner 0")
    collector.record(exc, "runner 0 (again)")
    assert len(collector.failures) == 1


@pytest.mark.parametrize("base", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()])
def test_E6_base_exceptions_outrank_errors_and_are_never_swallowed(base: BaseException) -> None:
    collector = FailureCollector()
    error = ValueError("earlier")
    collector.record(error, "runner 0")
    collector.record(base, "algorithm")
    raised = _raised(collector)
    assert raised is base
    if sys.version_info >= (3, 11):
        assert "also failed: runner 0: ValueError: earlier" in _notes(base)


def test_K_first_of_two_base_exceptions_wins() -> None:
    collector = FailureCollector()
    exit_, ki = SystemExit(1), KeyboardInterrupt()
    collector.record(exit_, "runner 0")
    collector.record(ki, "runner 1")
    assert _raised(collector) is exit_


def test_K3_interrupt_recorded_once_and_raised_as_keyboard_interrupt() -> None:
    collector = FailureCollector()
    collector.record(ValueError("while stopping"), "runner 0")
    collector.record_interrupt("SIGINT")
    collector.record_interrupt("SIGINT")  # a KeyboardInterrupt is already the one to raise
    assert collector.interrupted
    assert len(collector.failures) == 2
    raised = _raised(collector)
    assert type(raised) is KeyboardInterrupt


def test_K1_bundle_keyboard_interrupt_not_duplicated_by_signal() -> None:
    collector = FailureCollector()
    ki = KeyboardInterrupt()
    collector.record(ki, "algorithm")
    collector.record_interrupt("SIGINT")
    assert _raised(collector) is ki
    assert len(collector.failures) == 1


def test_E4_cleanup_error_never_masks_a_failure() -> None:
    collector = FailureCollector()
    original = ValueError("bundle")
    collector.record(original, "algorithm")
    with collector.cleanup("closing the store"):
        raise OSError("close failed")
    raised = _raised(collector)
    assert raised is original
    if sys.version_info >= (3, 11):
        assert _notes(original) == ["also failed: cleanup (closing the store): OSError: close failed"]


def test_E4_cleanup_error_before_a_failure_still_does_not_mask_it() -> None:
    collector = FailureCollector()
    with collector.cleanup("closing a loop"):
        raise OSError("early cleanup")
    original = RuntimeError("bundle")
    collector.record(original, "runner 0")
    assert _raised(collector) is original


def test_E4_cleanup_error_alone_is_raised() -> None:
    collector = FailureCollector()
    with collector.cleanup("closing the store"):
        raise OSError("close failed")
    assert isinstance(_raised(collector), OSError)


def test_K_keyboard_interrupt_during_cleanup_is_recorded_not_propagated() -> None:
    collector = FailureCollector()
    with collector.cleanup("closing the store"):
        raise KeyboardInterrupt
    assert collector.interrupted
    assert type(_raised(collector)) is KeyboardInterrupt


def test_late_failure_after_raise_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    collector = FailureCollector()
    collector.raise_first()
    with caplog.at_level(logging.ERROR, logger="agentlightning.execution.failures"):
        collector.record(ValueError("straggler"), "runner 3")
    assert "failed after execute() returned: runner 3: ValueError: straggler" in caplog.text
    assert collector.failures == []


def test_thread_safety_first_recorded_wins() -> None:
    collector = FailureCollector()
    barrier = threading.Barrier(8)
    errors = [ValueError(str(i)) for i in range(8)]

    def record(i: int) -> None:
        barrier.wait()
        collector.record(errors[i], f"runner {i}")

    threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = collector.failures
    assert len(recorded) == 8
    assert _raised(collector) is recorded[0].exc
