"""The ``LightningStore`` interface: the queue and record of rollouts, attempts, spans and resources.

Algorithms enqueue rollouts and wait for them; runners claim them, record spans and report outcomes.
Every method is async. Method and keyword names follow the original framework's store interface, so code
written against it ports unchanged. Implementations: ``memory.InMemoryLightningStore`` (the reference),
``threaded.ThreadedLightningStore`` (one store, many threads), and the HTTP and IPC clients.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final, Literal

from agentlightning.types import (
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    NamedResources,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    TaskInput,
)

__all__ = ["UNSET", "LightningStore", "Unset"]


class Unset(enum.Enum):
    """Marks a keyword that an update leaves unchanged (``None`` is a legitimate value)."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


class LightningStore(ABC):
    """Asynchronous store of rollouts, attempts, spans and resources.

    Semantics every implementation keeps:

    - ``enqueue_rollout`` queues a rollout without an attempt; ``dequeue_rollout`` never blocks, claims the
      oldest queuing or requeuing rollout (FIFO) and creates its next attempt (sequence ids 1, 2, ...);
      ``start_rollout`` creates a rollout and its first attempt without queuing it.
    - Statuses: rollout queuing -> preparing -> running -> succeeded | failed | cancelled; attempt
      preparing -> running -> succeeded | failed | timeout | unresponsive. A span or heartbeat moves a
      preparing attempt to running. The latest attempt's terminal status propagates to its rollout: success
      succeeds it; a failed, timed-out or unresponsive attempt requeues it when its ``RolloutConfig``
      allows another attempt, and fails it otherwise. Terminal transitions stamp ``end_time`` and wake
      ``wait_for_rollouts``.
    - Attempts past ``timeout_seconds`` or silent past ``unresponsive_seconds`` (``RolloutConfig`` gives
      every rollout 600 s unless it says otherwise) are detected, so the work held by a dead runner is
      retried or failed by its policy, never left claimed forever (T3).
    - Lookups (``get_*``) return ``None`` for an unknown id; operations on an unknown id raise
      ``ValueError`` naming it; an illegal status transition raises ``ValueError`` naming both states.
    - Returned objects are copies: mutating them never changes the store.
    """

    # -- rollouts -------------------------------------------------------------------------------------

    @abstractmethod
    async def start_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttemptedRollout:
        """Create a rollout with its first attempt (status preparing) without putting it in the queue."""

    @abstractmethod
    async def enqueue_rollout(
        self,
        input: TaskInput,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Rollout:
        """Create a rollout in status ``queuing``, with no attempt yet."""

    @abstractmethod
    async def dequeue_rollout(self) -> AttemptedRollout | None:
        """Claim the oldest queuing/requeuing rollout and start its next attempt; ``None`` when empty.

        Never blocks. Each queued rollout is handed out exactly once per attempt, whatever the
        concurrency.
        """

    @abstractmethod
    async def start_attempt(self, rollout_id: str) -> AttemptedRollout:
        """Start a new attempt on an existing, non-terminal rollout (taking it out of the queue)."""

    @abstractmethod
    async def update_rollout(
        self,
        rollout_id: str,
        input: TaskInput | Unset = UNSET,
        mode: RolloutMode | Unset | None = UNSET,
        resources_id: str | Unset | None = UNSET,
        status: RolloutStatus | Unset = UNSET,
        config: RolloutConfig | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Rollout:
        """Change the given fields of a rollout; a terminal status also ends its active attempt."""

    @abstractmethod
    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
    ) -> list[Rollout]:
        """Rollouts filtered by status and/or id, in creation order."""

    @abstractmethod
    async def get_rollout_by_id(self, rollout_id: str) -> Rollout | None:
        """The rollout with this id, or ``None``."""

    @abstractmethod
    async def wait_for_rollouts(
        self, *, rollout_ids: list[str], timeout: float | None = None
    ) -> list[Rollout]:
        """Wait until the given rollouts are terminal or ``timeout`` seconds pass.

        Returns the rollouts that are terminal by then, in the order asked. Raises ``ValueError`` for an
        unknown id. Wakes on completion; never busy-polls.
        """

    # -- attempts -------------------------------------------------------------------------------------

    @abstractmethod
    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        """Every attempt of a rollout, in sequence order."""

    @abstractmethod
    async def get_latest_attempt(self, rollout_id: str) -> Attempt | None:
        """The attempt with the highest sequence id, or ``None`` when there is none (or no rollout)."""

    @abstractmethod
    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str | Literal["latest"],
        status: AttemptStatus | Unset = UNSET,
        worker_id: str | Unset | None = UNSET,
        last_heartbeat_time: float | Unset = UNSET,
        metadata: dict[str, Any] | Unset = UNSET,
    ) -> Attempt:
        """Change the given fields of an attempt; a terminal status propagates to the rollout.

        A ``last_heartbeat_time`` counts as a heartbeat and moves a preparing attempt to running.
        """

    # -- spans ----------------------------------------------------------------------------------------

    @abstractmethod
    async def add_span(self, span: Span) -> Span:
        """Record a span (a heartbeat for its attempt); assigns the next ``sequence_id`` when it is 0."""

    @abstractmethod
    async def query_spans(
        self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None
    ) -> list[Span]:
        """Spans of a rollout, of one attempt (or the latest one), in sequence order."""

    # -- resources ------------------------------------------------------------------------------------

    @abstractmethod
    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        """Publish a new snapshot of named resources; it becomes the latest."""

    @abstractmethod
    async def get_latest_resources(self) -> ResourcesUpdate | None:
        """The most recent snapshot, or ``None``."""

    @abstractmethod
    async def get_resources_by_id(self, resources_id: str) -> ResourcesUpdate | None:
        """The snapshot with this id, or ``None``."""

    # -- lifecycle ------------------------------------------------------------------------------------

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op for stores that hold nothing
        """Release what the store holds (connections, threads). Idempotent."""
