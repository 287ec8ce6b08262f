"""Threshold gates after a flip: pure decisions over the values measured so far. No I/O.

A check fails an evaluation when its value is above `max`, or when it has no value and must
have one. The gate flips back after `failures_allowed` consecutive failed evaluations, so one
noisy sample does not roll back a good release but a real regression does within seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["continue", "pass", "fail"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    value: float | None
    max: float
    passed: bool
    reason: str


@dataclass
class ThresholdState:
    """What the gate has seen; JSON-ready so a restarted trigger can carry on from it."""

    evaluations: int = 0
    consecutive_failures: int = 0
    history: list[list[dict[str, Any]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(values: dict[str, float | None], limits: dict[str, tuple[float, bool]]) -> list[CheckResult]:
    """limits: name -> (max, must_have_data)."""
    results = []
    for name, (maximum, must_have_data) in limits.items():
        value = values.get(name)
        if value is None or math.isnan(value):
            passed = not must_have_data
            reason = "no data" + ("" if passed else " (this check must have data)")
            results.append(CheckResult(name, None, maximum, passed, reason))
            continue
        passed = value <= maximum
        reason = f"{value:.4g} {'<=' if passed else '>'} max {maximum:.4g}"
        results.append(CheckResult(name, value, maximum, passed, reason))
    return results


def step(
    state: ThresholdState, results: list[CheckResult], *, failures_allowed: int, evaluations_planned: int
) -> tuple[ThresholdState, Verdict, str]:
    state.evaluations += 1
    state.history.append([asdict(r) for r in results])
    failed = [r for r in results if not r.passed]
    state.consecutive_failures = state.consecutive_failures + 1 if failed else 0
    if state.consecutive_failures >= failures_allowed:
        shown = "; ".join(f"{r.name}: {r.reason}" for r in failed)
        return state, "fail", f"{state.consecutive_failures} consecutive failed evaluation(s): {shown}"
    if state.evaluations >= evaluations_planned:
        return state, "pass", f"all {state.evaluations} evaluations within limits"
    return state, "continue", ""


def format_history(history: list[list[dict[str, Any]]], last: int = 10) -> str:
    lines = [f"{'#':>3}  " + "  ".join(f"{c['name']:>16}" for c in history[0])] if history else []
    for number, row in list(enumerate(history, start=1))[-last:]:
        cells = []
        for check in row:
            shown = "no data" if check["value"] is None else f"{check['value']:.4g}"
            cells.append(f"{shown + ('' if check['passed'] else ' !'):>16}")
        lines.append(f"{number:>3}  " + "  ".join(cells))
    return "\n".join(lines)
