"""The staging test's verdict, once its command has ended on any platform."""

from __future__ import annotations

import pytest

from immutable.pipelines.release import ReleaseError, staging_test_result

PLAN = {"app": "sample", "version": "1.2.0"}


def test_a_command_that_exits_zero_passes_with_its_output_tail() -> None:
    result = staging_test_result(PLAN, {"exit_code": 0, "output": "x" * 5000 + "100 requests, 0 failure(s)"})
    assert result["exit_code"] == 0 and result["output"].endswith("0 failure(s)") and len(result["output"]) == 2000


def test_a_failed_command_stops_the_release_naming_the_app_version_exit_and_output() -> None:
    with pytest.raises(ReleaseError) as failed:
        staging_test_result(PLAN, {"exit_code": 3, "output": "7 failure(s)"})
    message = str(failed.value)
    assert "exit 3" in message and "sample 1.2.0" in message and "7 failure(s)" in message, message
    assert "Nothing was deployed" in message
