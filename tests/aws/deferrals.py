"""Driving a deferring task through its waits as Airflow does, with a triggerer restart at each:
every trigger is rebuilt from its serialized form (what a new triggerer process builds), run to its
first event, and the task resumed with that event, until the task ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def first_event(trigger: Any) -> dict[str, Any]:
    """The first event the trigger yields, as the triggerer would hand it to the task."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


class RecordingTi:
    """The task instance of a task run outside a DAG run: keeps what the task pushes to XCom."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, *, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, **_: Any) -> None:
        return None  # outside a DAG run no task pushed anything (no release plan: no stop to watch for)


def through_every_wait(
    operator: Any,
    deferred: Any,
    on_wait: Callable[[Any, Any], None] = lambda trigger, restarted: None,
    context: dict[str, Any] | None = None,
) -> tuple[Any, list[Any]]:
    """From the task's first `TaskDeferred`: each wait's trigger (with its rebuilt twin) to `on_wait`,
    then its first event (which must be a success) to the task (with `context`), until the task
    returns. Returns (the task's result, the triggers it waited on, in order)."""
    from airflow.sdk.exceptions import TaskDeferred

    waited: list[Any] = []
    while True:
        trigger = deferred.trigger
        assert deferred.method_name == "execute_complete", deferred.method_name
        restarted = type(trigger)(**trigger.serialize()[1])
        on_wait(trigger, restarted)
        waited.append(trigger)
        event = first_event(restarted)
        assert event["status"] == "success", event
        try:
            return operator.execute_complete(context or {}, event), waited
        except TaskDeferred as again:
            deferred = again
