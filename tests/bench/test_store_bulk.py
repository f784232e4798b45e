"""``bench.store``'s bulk rows: each pattern judged against its own smallest size, the batch measured
with and without the collector (the second, a diagnostic, judged by no target). No timing is asserted."""

from __future__ import annotations

import gc

import pytest

from bench import store


def test_the_batch_is_measured_with_and_without_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "BATCH_SIZES", (50, 200))
    rows = store._measure_batches(1)
    assert [(row["pattern"], row["size"]) for row in rows] == [
        ("batch", 50),
        ("batch", 200),
        (store.BATCH_NO_GC, 50),
        (store.BATCH_NO_GC, 200),
    ]
    uncollected = [row for row in rows if row["pattern"] == store.BATCH_NO_GC]
    assert all(row["gc_pct"] == 0 and row["full_collections"] == 0 for row in uncollected)
    assert gc.isenabled()  # the diagnostic turns the collector back on


def test_the_verdicts_judge_only_the_collected_batch() -> None:
    rows = [
        {"pattern": "wait_for_rollouts", "size": store.WAIT_SIZES[-1], "median_rps": 300_000.0},
        {"pattern": "batch", "size": store.BATCH_SIZES[-1], "ratio": 0.7},
        {"pattern": store.BATCH_NO_GC, "size": store.BATCH_SIZES[-1], "ratio": 0.9},
    ]
    assert [ok for _, ok in store.bulk_verdicts(rows)] == [True, False]
