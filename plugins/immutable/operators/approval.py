"""The rollout's human approval: Airflow's HITL `ApprovalOperator`, with an end.

It waits at most the spec's `bluegreen.approval_timeout_s` (Airflow's `response_timeout`: on 3.3 the
scheduler resolves a request nobody answered, no triggerer needed). Its body says what has passed so
far: the canary's verdict and score, the regions this run flipped, with links. A rejection, or no
answer in time, fails the task with who and why (or that nobody answered), so the release's
`rollback` task sends every region this run flipped back; only an approval lets the rollout go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

REASON_MAX_LENGTH = 500


class ApprovalRefused(AirflowFailException):
    """Rejected, or not answered in time: the rollout stops (never retried) and is rolled back."""


def approval_body(
    *, app: str, version: str, canary: dict[str, Any] | None, flipped: Sequence[dict[str, Any]], links: dict[str, str]
) -> str:
    """What the approver reads: what has passed so far and where to look (Markdown)."""
    lines = [f"**{app} {version}** waits for your approval before it goes on.", ""]
    if canary is None:
        lines.append("- Canary: none ran.")
    else:
        score = canary.get("score")
        shown = f", score {score:.0f}/100" if isinstance(score, int | float) else ""
        lines.append(f"- Canary: {canary.get('status', 'unknown')}{shown}. {canary.get('reason', '')}".rstrip())
    done = [f["region"] for f in flipped if f.get("flipped")]
    lines.append(
        f"- Flipped so far: {', '.join(done)} (post-flip gates passed)." if done else "- Flipped so far: no region."
    )
    lines += ["", "Reject (with a reason) to send every region this run flipped back to what ran before."]
    lines += [f"- [{name}]({url})" for name, url in sorted(links.items())]
    return "\n".join(lines)


def refusal_message(*, app: str, regions: Sequence[str], event: dict[str, Any], timeout: timedelta) -> str | None:
    """Why the rollout stops, cause first; None when it was approved."""
    where = ", ".join(regions)
    undo = "the rollback task sends back every region this run flipped"
    if event.get("error_type") == "timeout":
        return f"Nobody answered the approval to roll {app} out to {where} within {timeout}: not approved, so {undo}."
    chosen = event.get("chosen_options") or []
    if chosen == [ApprovalOperator.APPROVE]:
        return None
    user = event.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") or "an unnamed user"
    reason = str((event.get("params_input") or {}).get("reason") or "no reason given")[:REASON_MAX_LENGTH]
    return f"Rejected by {who}: {reason}. The rollout of {app} to {where} stops, and {undo}."


class RolloutApprovalOperator(ApprovalOperator):
    def __init__(
        self, *, app: str, regions: Sequence[str], timeout_s: float, previous_flips: Sequence[str], **kwargs: Any
    ) -> None:
        # The approver's form holds only the reason: the DAG's trigger params (version, ref, ...), which
        # Airflow hands every task, are not the approver's to answer.
        kwargs.pop("params", None)
        super().__init__(
            subject=f"Roll {app} out to {', '.join(regions)}?",
            body="(written when the approval is asked: what has passed so far)",
            response_timeout=timedelta(seconds=timeout_s),
            params={
                "reason": Param(
                    None,
                    type=["null", "string"],
                    maxLength=REASON_MAX_LENGTH,
                    description="Why you reject (shown in the run's failure); optional when you approve.",
                )
            },
            **kwargs,
        )
        self.app = app
        self.regions = list(regions)
        self.previous_flips = list(previous_flips)  # task ids of the flips before this approval

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        canary = ti.xcom_pull(task_ids="canary.analysis")
        flipped: list[dict[str, Any]] = []
        for task_id in self.previous_flips:
            found = ti.xcom_pull(task_ids=task_id)
            flipped += found if isinstance(found, list) else [found] if found else []
        flipped = [f for f in flipped if isinstance(f, dict)]
        version = next((str(f["version"]) for f in flipped if f.get("version")), "")
        self.body = approval_body(
            app=self.app, version=version, canary=canary, flipped=flipped, links=self._links(context)
        )
        return super().execute(context)

    def _links(self, context: Any) -> dict[str, str]:
        """Relative links: the approver reads them inside the Airflow UI that serves both."""
        from urllib.parse import quote

        run = context["dag_run"]
        return {
            "Releases page (what runs where)": "/releases/",
            "This run": f"/dags/{quote(run.dag_id)}/runs/{quote(run.run_id, safe='')}",
        }

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        message = refusal_message(
            app=self.app, regions=self.regions, event=event, timeout=self.response_timeout or timedelta(0)
        )
        if message is not None:
            raise ApprovalRefused(message)
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        self.log.info("Approved by %s: the rollout goes on to %s", answer["responded_by_user"], self.regions)
        return answer
