"""How the gates read a metrics backend whose points come once a period and late: pure, no I/O.

Prometheus computes a rate at any step and has it at once (period and delay 0). An ALB's
CloudWatch metrics are standard resolution: one point a minute, arriving one to three minutes
after the minute. A gate on them steps by whole periods, judges a window only once its last
point can have arrived, and asks for no more samples than the window can hold; a window too
short to hold a few points is a configuration error, named before anything is deployed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def duration_s(window: str) -> float:
    """Seconds in a Prometheus-style duration such as 30s, 5m or 1h."""
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


class GateTimingError(ValueError):
    """A gate's settings cannot work with the backend's timing; the message names the field."""


@dataclass(frozen=True)
class BackendTiming:
    period_s: float = 0.0  # one point per period; 0: any step (the backend computes it on demand)
    delay_s: float = 0.0  # a period's point is there this long after the period ends


@dataclass(frozen=True)
class CanaryTiming:
    step_s: float  # one sample per step: a whole number of periods
    delay_s: float  # each interval is judged this long after it ends
    min_samples: int  # per side and metric: what the spec asks, or what an interval can hold


@dataclass(frozen=True)
class ThresholdTiming:
    step_s: float  # one evaluation per step
    delay_s: float  # each evaluation happens this long after the moment it judges
    lookback_s: float  # the newest point within this look-back is the value judged


def step_for(step_s: float, backend: BackendTiming) -> float:
    """The gate's step in whole periods of the backend (never below one period)."""
    if backend.period_s <= 0:
        return step_s
    return max(1, math.ceil(step_s / backend.period_s - 1e-9)) * backend.period_s


def samples_for_confidence(confidence: float) -> int:
    """The fewest samples per side with which a two-sided Mann-Whitney test can find a difference at
    this confidence at all: even two samples sets wholly apart give p = 2 / C(2n, n)."""
    n = 1
    while 2 / math.comb(2 * n, n) >= 1 - confidence:
        n += 1
    return n


def canary_timing(
    backend: BackendTiming, *, step_s: float, interval_s: float, min_samples: int, confidence: float
) -> CanaryTiming:
    step = step_for(step_s, backend)
    # Whole periods in an interval: the last one has not ended when the interval does.
    whole = int(interval_s // step + 1e-9) - (1 if backend.period_s > 0 else 0)
    needed = samples_for_confidence(confidence)
    if whole < needed:
        least = (needed + (1 if backend.period_s > 0 else 0)) * step
        raise GateTimingError(
            f"canary.interval_s {interval_s:g} holds {max(whole, 0)} whole point(s) of the metrics "
            f"(one per {step:g}s), and a comparison at confidence {confidence:g} needs at least {needed} "
            f"per side: make it at least {least:g}s"
        )
    return CanaryTiming(step_s=step, delay_s=backend.delay_s, min_samples=max(needed, min(min_samples, whole)))


def threshold_timing(
    backend: BackendTiming, *, step_s: float, window_s: float, rate_window_s: float
) -> ThresholdTiming:
    step = step_for(step_s, backend)
    if window_s < step:
        raise GateTimingError(
            f"bluegreen.post_flip_window_s {window_s:g} is shorter than one step of the metrics ({step:g}s): "
            f"make it at least {step:g}s"
        )
    # Two periods: however the moment falls against the periods' edges, one whole point is inside.
    lookback = max(step, rate_window_s, 2 * backend.period_s)
    return ThresholdTiming(step_s=step, delay_s=backend.delay_s, lookback_s=lookback)
