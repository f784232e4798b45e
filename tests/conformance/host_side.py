"""One side of a multi-host strategy on a test host, for test_placement.py: ``python host_side.py SPEC``.

SPEC (JSON): ``strategy`` (a kit SPEC), ``options`` (constructor options, the side's placement merged
in) and ``journal`` (the run's journal, one file every host appends to). Each side gets the same
scripted bundles and a fresh store, as the kit hands them; the strategy's side decides which bundles it
runs. The algorithm enqueues ``ROLLOUTS`` rollouts and waits for them; runners work until the stop.
The last stdout line is ``{"outcome": ...}``.
"""

from __future__ import annotations

import json
import sys

from conformance.bundles import ScriptedAlgorithm, ScriptedRunner
from conformance.scenarios import Script, Step
from conformance.target import build_store, build_strategy, make_target

ROLLOUTS = 3
ALGORITHM = Script(
    (
        Step("store", args={"op": "enqueue", "count": ROLLOUTS}),
        Step("store", args={"op": "wait_all", "timeout": 30.0}),
    )
)
RUNNER = Script((Step("store", args={"op": "work"}),))


def main() -> None:
    spec = json.loads(sys.argv[1])
    target = make_target(spec["strategy"], spec["options"])
    strategy, store = build_strategy(target), build_store(target)
    algorithm = ScriptedAlgorithm(ALGORITHM, spec["journal"])
    runner = ScriptedRunner([RUNNER], spec["journal"])
    try:
        strategy.execute(algorithm, runner, store)
    except BaseException as error:
        print(json.dumps({"outcome": f"raised {type(error).__name__}: {error}"}), flush=True)
        raise SystemExit(1) from None
    print(json.dumps({"outcome": "returned"}), flush=True)


if __name__ == "__main__":
    main()
