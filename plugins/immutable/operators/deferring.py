"""The shape every long platform step shares: start the work, then, for as long as the platform
names something to wait for (an image being made, a builder's script, a fleet filling, an
instance's status checks), defer to the triggerer on the trigger it names, holding no worker slot,
and let the platform go on after each wait. A platform whose work is done in seconds (containers)
names nothing, and the step ends in its first run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

WAIT_MARGIN_S = 300.0  # seconds on top of a trigger's own timeout before Airflow gives up on it


class PlatformWaitOperator(BaseOperator):
    """Subclasses say how to `start`, what to wait for next (`next_wait`: a trigger and its timeout,
    or None), what a finished wait makes of the work (`after_wait`) and the result (`done`).

    The work in progress travels in the trigger (its `return_value`, which every trigger the
    platforms name accepts and hands back in its event), so a resume needs nothing else; not in
    `defer(kwargs=...)`, which `dag.test()` does not hand back."""

    def start(self, context: Any) -> dict[str, Any]:
        raise NotImplementedError

    def next_wait(self, work: dict[str, Any]) -> tuple[Any, float] | None:
        raise NotImplementedError

    def after_wait(self, work: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        return work

    def done(self, work: dict[str, Any]) -> dict[str, Any]:
        return work

    def execute(self, context: Any) -> dict[str, Any]:
        return self._wait_or_finish(self.start(context))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "success":
            # The trigger's verdict is only a hint: the platform judges the state again from here.
            self.log.info("the wait in the triggerer ended: %s", event.get("message") or event)
        carried: dict[str, Any] = event.get("value", event.get("return_value")) or {}  # the provider's say "value"
        return self._wait_or_finish(self.after_wait(carried["work"], event))

    def _wait_or_finish(self, work: dict[str, Any]) -> dict[str, Any]:
        wait = self.next_wait(work)
        if wait is not None:
            trigger, timeout_s = wait
            self.defer(
                trigger=carrying(trigger, work),
                method_name="execute_complete",
                timeout=timedelta(seconds=timeout_s + WAIT_MARGIN_S),
            )
        return self.done(work)


def carrying(trigger: Any, work: dict[str, Any]) -> Any:
    """The same trigger, built anew from its serialized form with `work` as its return value."""
    _, kwargs = trigger.serialize()
    return type(trigger)(**(kwargs | {"return_value": {"work": work}}))
