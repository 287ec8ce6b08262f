"""How verdicts read in a task log: numbers in reasons, and the table of an interval."""

from __future__ import annotations

import math

from immutable.canary_analysis.model import IntervalResult

MIN_PLAIN_NUMBER, MAX_PLAIN_NUMBER = 1e-4, 1e4  # reasons and tables show other magnitudes as 1.23e-05


def format_table(result: IntervalResult) -> str:
    """A fixed-width table for a task log: one row per metric, then the score."""
    header = ("metric", "canary", "baseline", "classification", "why")
    rows = [
        (
            metric.name,
            _num(metric.canary.median) if metric.canary.median is not None else "-",
            _num(metric.baseline.median) if metric.baseline.median is not None else "-",
            metric.classification if metric.passed or not metric.counted else f"{metric.classification} FAIL",
            metric.reason,
        )
        for metric in result.metrics
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if column in (1, 2) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        return "  ".join([*cells, row[-1]]).rstrip()

    rule = "  ".join("-" * width for width in [*widths, len(header[-1])])
    lines = [line(header), rule, *(line(row) for row in rows), rule]
    lines.append(f"score {result.score:g} ({result.classification}): {result.reason}")
    return "\n".join(lines)


def _num(value: float, signed: bool = False) -> str:
    """At least two decimals and two significant digits; scientific notation for tiny or huge values."""
    sign = "+" if signed else ""
    magnitude = abs(value)
    if value == 0 or MIN_PLAIN_NUMBER <= magnitude < MAX_PLAIN_NUMBER:
        decimals = 2 if value == 0 else max(2, 1 - math.floor(math.log10(magnitude)))
        return f"{value:{sign}.{decimals}f}"
    return f"{value:{sign}.3g}"


def _num_p(value: float) -> str:
    return f"{value:.4g}"
