"""The release's human approvals: Airflow's HITL `ApprovalOperator`, with an end.

Two questions are asked. Before the second wave (`approval: true`): may the rollout go on? And
after a canary whose last interval was only marginal (`canary.on_marginal: ask`): may this version
go out at all? Each waits at most the spec's `bluegreen.approval_timeout_s` (Airflow's
`response_timeout`). Its body says what has passed so far, with links. A rejection, or no answer in
time, fails the task with who and why (or that nobody answered), so the release's `rollback` task
sends every region this run flipped back; only an approval lets the release go on.
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


ROLLBACK_UNDOES = "the rollback task sends back every region this run flipped"


def refusal_message(*, app: str, regions: Sequence[str], event: dict[str, Any], timeout: timedelta) -> str | None:
    """Why the rollout stops, cause first; None when it was approved."""
    where = ", ".join(regions)
    return _refusal(
        question=f"the approval to roll {app} out to {where}",
        stops=f"The rollout of {app} to {where} stops",
        event=event,
        timeout=timeout,
    )


def _refusal(*, question: str, stops: str, event: dict[str, Any], timeout: timedelta) -> str | None:
    if event.get("error_type") == "timeout":
        return f"Nobody answered {question} within {timeout}: not approved, so {ROLLBACK_UNDOES}."
    if event.get("error_type"):
        return f"The answer to {question} could not be used ({event.get('error')}): not approved, so {ROLLBACK_UNDOES}."
    chosen = event.get("chosen_options") or []
    if chosen == [ApprovalOperator.APPROVE]:
        return None
    user = event.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") or "an unnamed user"
    reason = str((event.get("params_input") or {}).get("reason") or "no reason given")[:REASON_MAX_LENGTH]
    return f"Rejected by {who}: {reason}. {stops}, and {ROLLBACK_UNDOES}."


def marginal_canary_body(*, app: str, canary: dict[str, Any], score_tables: str, links: dict[str, str]) -> str:
    """What the approver of a marginal canary reads: the verdict and every interval's score table."""
    lines = [
        f"**{app} {canary.get('canary_version', '')}**: its canary was only marginal. Release it anyway?",
        "",
        f"- Verdict: {canary.get('reason', '')}",
        f"- Production runs {canary.get('baseline_version', 'the current version')} meanwhile; nothing is flipped yet.",
        "",
        "```",
        score_tables,
        "```",
        "",
        f"Reject (with a reason) to stop the release; {ROLLBACK_UNDOES}.",
    ]
    lines += [f"- [{name}]({url})" for name, url in sorted(links.items())]
    return "\n".join(lines)


def _run_links(context: Any) -> dict[str, str]:
    """Relative links: the approver reads them inside the Airflow UI that serves both."""
    from urllib.parse import quote

    run = context["dag_run"]
    return {
        "Releases page (what runs where)": "/releases/",
        "This run": f"/dags/{quote(run.dag_id)}/runs/{quote(run.run_id, safe='')}",
    }


def _reason_form() -> dict[str, Param]:
    # The approver's form holds only the reason: the DAG's trigger params (version, ref, ...), which
    # Airflow hands every task, are not the approver's to answer.
    return {
        "reason": Param(
            None,
            type=["null", "string"],
            maxLength=REASON_MAX_LENGTH,
            description="Why you reject (shown in the run's failure); optional when you approve.",
        )
    }


class _ReleaseApproval(ApprovalOperator):
    """Approve or reject with an optional reason, within `timeout_s`; the body is written when asked."""

    def __init__(self, *, app: str, subject: str, timeout_s: float, **kwargs: Any) -> None:
        from immutable.notifications import notifiers_for

        kwargs.pop("params", None)
        kwargs.setdefault("notifiers", notifiers_for("approval_waiting"))
        super().__init__(
            subject=subject,
            body="(written when the approval is asked: what has passed so far)",
            response_timeout=timedelta(seconds=timeout_s),
            params=_reason_form(),
            **kwargs,
        )
        self.app = app


class RolloutApprovalOperator(_ReleaseApproval):
    def __init__(
        self, *, app: str, regions: Sequence[str], timeout_s: float, previous_flips: Sequence[str], **kwargs: Any
    ) -> None:
        super().__init__(app=app, subject=f"Roll {app} out to {', '.join(regions)}?", timeout_s=timeout_s, **kwargs)
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
        links = _run_links(context)
        self.body = approval_body(app=self.app, version=version, canary=canary, flipped=flipped, links=links)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        message = refusal_message(
            app=self.app, regions=self.regions, event=event, timeout=self.response_timeout or timedelta(0)
        )
        if message is not None:
            raise ApprovalRefused(message)
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        self.log.info("Approved by %s: the rollout goes on to %s", answer["responded_by_user"], self.regions)
        return answer


class MarginalCanaryApprovalOperator(_ReleaseApproval):
    """After the canary gate: asks only when the canary was marginal (`canary.on_marginal: ask`);
    after a clean pass (or no canary) it ends at once without asking."""

    def __init__(self, *, app: str, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app=app, subject=f"Release {app} on a marginal canary?", timeout_s=timeout_s, **kwargs)

    def execute(self, context: Any) -> Any:
        canary = context["ti"].xcom_pull(task_ids="canary.analysis") or {}
        if canary.get("status") != "marginal":
            self.log.info("the canary was %s, not marginal: nothing to ask", canary.get("status", "not run"))
            return {"asked": False, "canary": canary.get("status")}
        self.subject = f"Release {self.app} {canary.get('canary_version', '')} on a marginal canary?"
        self.body = marginal_canary_body(
            app=self.app, canary=canary, score_tables=str(canary.get("score_tables", "")), links=_run_links(context)
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # A new process resumes the task: what execute() knew is read again.
        canary = context["ti"].xcom_pull(task_ids="canary.analysis") or {}
        version = canary.get("canary_version") or "this version"
        message = _refusal(
            question=f"the approval to release {self.app} {version} on a marginal canary",
            stops=f"The release of {self.app} {version} stops before any region is flipped",
            event=event,
            timeout=self.response_timeout or timedelta(0),
        )
        if message is not None:
            raise ApprovalRefused(message)
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        self.log.info("Approved by %s: the release goes on despite a marginal canary", answer["responded_by_user"])
        return answer
