"""The traffic decisions inside a region, taken out of the I/O: canary shares, flip steps, rollback."""

from __future__ import annotations

from typing import Any

import pytest

from immutable.rollout import RegionState, canary_shares, flip_steps, lockstep_rounds, plan_rollback

NEW, OLD = "sha256:" + "b" * 64, "sha256:" + "a" * 64


def test_canary_and_baseline_take_equal_shares_and_production_the_rest() -> None:
    assert canary_shares("blue", 10) == {"blue": 80, "canary": 10, "baseline": 10}
    with pytest.raises(ValueError, match=r"\(0, 50\] percent, got 60"):
        canary_shares("blue", 60)


def test_a_flip_moves_weight_step_by_step_and_ends_with_the_new_color_alone() -> None:
    assert flip_steps("green", "blue", [25, 50, 100]) == [
        {"green": 25, "blue": 75},
        {"green": 50, "blue": 50},
        {"green": 100},
    ]


def test_a_first_release_has_no_previous_color_to_share_with() -> None:
    """Every step's shares sum to 100: with nobody to share with, the new color takes all at once."""
    assert flip_steps("blue", None, [50, 100]) == [{"blue": 100}]
    for steps in (flip_steps("green", "blue", [10, 50, 100]), flip_steps("blue", None, [25, 100])):
        assert all(sum(shares.values()) == 100 for shares in steps), steps


OLD_LIVE = {"color": "blue", "digest": OLD, "run_id": "run-0"}


def region(shares: dict[str, float], fleets: dict[str, str], live: Any, previous: Any, lease: str | None) -> Any:
    return RegionState(shares, fleets, live, previous, lease)


def test_a_synchronized_flip_moves_every_region_in_the_same_rounds() -> None:
    rounds = lockstep_rounds(
        {
            "eu-west": flip_steps("green", "blue", [25, 50, 100]),
            "us-east": flip_steps("blue", "green", [25, 50, 100]),
            "ap-south": flip_steps("green", None, [25, 50, 100]),  # a first release there: one step
        }
    )
    assert rounds == [
        {"eu-west": {"green": 25, "blue": 75}, "us-east": {"blue": 25, "green": 75}},
        {"eu-west": {"green": 50, "blue": 50}, "us-east": {"blue": 50, "green": 50}},
        {"eu-west": {"green": 100}, "us-east": {"blue": 100}, "ap-south": {"green": 100}},
    ]
    assert lockstep_rounds({}) == []
    with pytest.raises(ValueError, match=r"regions without a flip step: \['us-east'\]"):
        lockstep_rounds({"eu-west": [{"green": 100.0}], "us-east": []})


def test_a_region_this_run_flipped_goes_back_to_the_kept_color() -> None:
    state = region(
        {"green": 100},
        {"blue": OLD, "green": NEW},
        {"color": "green", "digest": NEW, "run_id": "run-1"},
        {"color": "blue", "digest": OLD},
        "run-1",
    )
    action = plan_rollback(state, digest=NEW, run_id="run-1")
    assert (action.back_to, action.note_flip_back, action.remove) == ("blue", True, ("green",))


def test_a_flip_interrupted_halfway_goes_back_to_the_recorded_live_color() -> None:
    """The worker died between the weight steps: half the traffic on the new color, and the record
    still names the old one live (the flip had not finished); the kept color was replaced by ours."""
    state = region({"blue": 50, "green": 50}, {"blue": OLD, "green": NEW}, OLD_LIVE, None, "run-1")
    action = plan_rollback(state, digest=NEW, run_id="run-1")
    assert (action.back_to, action.note_flip_back, action.remove) == ("blue", False, ("green",))
    assert "interrupted halfway" in action.why


def test_a_region_another_run_flipped_to_the_same_digest_is_left_alone() -> None:
    state = region(
        {"green": 100},
        {"blue": OLD, "green": NEW},
        {"color": "green", "digest": NEW, "run_id": "run-0"},
        {"color": "blue", "digest": OLD},
        "run-0",
    )
    action = plan_rollback(state, digest=NEW, run_id="run-1")
    assert (action.back_to, action.remove) == (None, ())


def test_a_launched_color_that_never_took_traffic_and_the_canaries_are_removed() -> None:
    state = region(
        {"blue": 80, "canary": 10, "baseline": 10},
        {"blue": OLD, "green": NEW, "canary": NEW, "baseline": OLD},
        OLD_LIVE,
        None,
        "run-1",
    )
    action = plan_rollback(state, digest=NEW, run_id="run-1")
    assert (action.back_to, action.remove) == (None, ("green", "canary", "baseline"))


def test_the_live_color_and_another_releases_kept_color_are_never_removed() -> None:
    state = region({"blue": 100}, {"blue": OLD, "green": "sha256:" + "c" * 64}, OLD_LIVE, None, "run-1")
    assert plan_rollback(state, digest=NEW, run_id="run-1").remove == ()


def test_a_failed_first_release_takes_the_app_out_of_the_region_as_it_was() -> None:
    state = region({"blue": 100}, {"blue": NEW}, {"color": "blue", "digest": NEW, "run_id": "run-1"}, None, "run-1")
    action = plan_rollback(state, digest=NEW, run_id="run-1")
    assert (action.back_to, action.remove, action.leaves_region) == (None, ("blue",), True)


def test_an_unknown_platform_or_metrics_backend_is_named_with_the_known_ones() -> None:
    from immutable.platforms import metrics_client_for

    with pytest.raises(NotImplementedError, match="metrics backend 'graphite' is not implemented; the known ones"):
        metrics_client_for({"kind": "graphite"})


def test_lockstep_sets_each_round_in_every_region_before_the_next_round() -> None:
    import threading

    from immutable.pipelines.production import LockstepError, run_in_lockstep

    rounds = lockstep_rounds({r: flip_steps("green", "blue", [50, 100]) for r in ("eu-west", "us-east", "ap-south")})
    calls: list[tuple[str, float]] = []
    lock = threading.Lock()

    def apply(region: str, shares: dict[str, float]) -> None:
        with lock:
            calls.append((region, shares["green"]))

    reached = run_in_lockstep(rounds, apply, pause_s=0.0)
    assert sorted(reached) == ["ap-south", "eu-west", "us-east"]
    assert [green for _, green in calls] == [50.0] * 3 + [100.0] * 3  # no region ahead of a round

    def apply_failing(region: str, shares: dict[str, float]) -> None:
        if region == "us-east":
            raise ConnectionError("runtime API refused")
        apply(region, shares)

    calls.clear()
    with pytest.raises(LockstepError, match=r"^us-east: runtime API refused \(step 1 of 2\)$"):
        run_in_lockstep(rounds, apply_failing, pause_s=0.0)
    assert all(green == 50.0 for _, green in calls), calls  # the failed round was the last one tried


def test_a_round_set_on_its_own_is_named_by_its_step_of_the_whole_flip() -> None:
    """A synchronized flip that waits between rounds sets each round in its own call; a failure names
    the step of the whole flip, not of the call."""
    from immutable.pipelines.production import LockstepError, run_in_lockstep

    rounds = lockstep_rounds({r: flip_steps("green", "blue", [50, 100]) for r in ("eu-west", "us-east")})

    def refused(region: str, shares: dict[str, float]) -> None:
        raise ConnectionError("listener busy")

    with pytest.raises(LockstepError, match=r"\(step 2 of 2\)$"):
        run_in_lockstep(rounds[1:], refused, pause_s=0.0, first_step=2, steps=len(rounds))
