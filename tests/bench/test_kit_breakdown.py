"""``bench.kit``'s breakdown of a kit run: seconds per contract and per phase, read from its report."""

from __future__ import annotations

from bench.kit import breakdown, render_profile_rows


def test_breakdown_sums_phases_and_keeps_p1_and_the_kits_own_time_apart() -> None:
    report = {
        "results": [
            {
                "id": "L1",
                "duration": 2.0,
                "phases": {"sandbox": 0.5, "start-up": 0.25, "execute": 0.5, "settle": 0.25},
            },
            {"id": "L1", "duration": 1.0, "phases": {"sandbox": 0.5, "execute": 0.25}},
            {"id": "G2", "duration": 0.5, "phases": {}},
            {"id": "P1", "duration": 20.0, "phases": {"sandbox": 9.0}},
        ]
    }
    figures = breakdown(report)
    assert figures["per_contract"] == {"P1": 20.0, "L1": 3.0, "G2": 0.5}
    assert figures["phases"] == {
        "sandbox": 1.0,
        "start-up": 0.25,
        "execute": 0.75,
        "settle": 0.25,
        "cleanup": 0.0,
        "P1": 20.0,
        "kit": 1.25,
    }
    row = {"strategy": "shm", "kit": "this", "profile": "ci", "seconds": 24.5, "returncode": 0, **figures}
    table = render_profile_rows([row])
    assert table.splitlines()[1].startswith("shm      this     ci         24.5s    0     20.0s     1.0s")
    assert "shm this ci: slowest contracts P1 20.0s, L1 3.0s, G2 0.5s" in table
