"""Shares and weights: a percentage per color becomes an HAProxy weight per server, and back. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from immutable.local.haproxy_names import LoadBalancerError, server_color

MAX_WEIGHT = 256  # HAProxy's largest server weight
SHARES_TOLERANCE_PCT = 0.01  # shares must sum to 100 within this


def compute_weights(servers: Mapping[str, Sequence[str]], shares: Mapping[str, float]) -> dict[str, int]:
    """{server: weight} giving each color its percentage, split evenly over the color's servers.

    `servers` maps color -> server names. Colors absent from `shares` get 0. The largest per-server
    weight is MAX_WEIGHT and any positive share gets at least weight 1, so the result is exact to
    within weight rounding (well under one percentage point for up to a few servers per color).
    """
    for color, share in shares.items():
        if not 0 <= share <= 100:
            raise LoadBalancerError(f"share of '{color}' is {share}; shares are percentages between 0 and 100")
    total = sum(shares.values())
    if abs(total - 100) > SHARES_TOLERANCE_PCT:
        raise LoadBalancerError(f"shares {dict(shares)} sum to {total}, not 100")
    empty = sorted(c for c, s in shares.items() if s > 0 and not servers.get(c))
    if empty:
        raise LoadBalancerError(
            f"colors {empty} have a share > 0 but no server; servers by color: "
            f"{ {c: list(n) for c, n in servers.items()} }. Add their servers first or give them 0"
        )
    per_server = {c: shares[c] / len(servers[c]) for c in shares if shares[c] > 0}
    scale = MAX_WEIGHT / max(per_server.values())
    weights = {name: 0 for names in servers.values() for name in names}
    for color, share in per_server.items():
        for name in servers[color]:
            weights[name] = max(1, min(MAX_WEIGHT, round(share * scale)))
    return weights


def shares_from_weights(weights: Mapping[str, int]) -> dict[str, float]:
    """{color: percentage} from {server: weight}; all 0 when no server has a weight."""
    by_color: dict[str, int] = {}
    for name, weight in weights.items():
        color = server_color(name)
        by_color[color] = by_color.get(color, 0) + weight
    total = sum(by_color.values())
    return {c: round(100 * w / total, 3) if total else 0.0 for c, w in sorted(by_color.items())}
