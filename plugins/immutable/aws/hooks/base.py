"""AwsBaseHook bound to one region, with retries that back off on throttling; helpers for tags and errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

if TYPE_CHECKING:
    from immutable.config import PlatformConfig

RETRY_MAX_ATTEMPTS = 8  # per call, throttling and transient errors; adaptive mode also rate-limits the client
HookT = TypeVar("HookT", bound="RegionalAwsHook")


def retry_config() -> dict[str, Any]:
    """botocore Config kwargs: adaptive retries (exponential backoff with jitter plus client-side rate limiting)."""
    return {"retries": {"mode": "adaptive", "max_attempts": RETRY_MAX_ATTEMPTS}}


class RegionalAwsHook(AwsBaseHook):
    """AwsBaseHook for one region, with throttling retries. Subclasses set `client_type`."""

    # Subclasses set `client_type = "<service>"` (AwsBaseHook reads it as the boto3 client to make).

    def __init__(
        self,
        *,
        region_name: str,
        aws_conn_id: str | None = "aws_default",
        waiter_parameters: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not region_name:
            raise ValueError(f"{type(self).__name__} needs a region_name")
        # What the project's own waiters (include/aws/waiters/<service>.json) leave open, such as a
        # fleet's size: filled into their acceptors when a waiter is made (the provider's triggers
        # ask for a waiter by name only).
        self.waiter_parameters = waiter_parameters
        if kwargs.get("config") is None:
            from botocore.config import Config

            kwargs["config"] = Config(**retry_config())
        service = getattr(type(self), "client_type", None)  # the subclass's class attribute
        if not isinstance(service, str) or not service:
            raise TypeError(f"{type(self).__name__} must set client_type")
        kwargs["client_type"] = service
        super().__init__(aws_conn_id=aws_conn_id, region_name=region_name, **kwargs)

    @property
    def waiter_path(self) -> Path | None:
        """The project's waiters for this service, which the provider's hooks and triggers use as
        they do their own custom waiters."""
        from immutable.paths import INCLUDE_DIR

        path = INCLUDE_DIR / "aws" / "waiters" / f"{self.client_type}.json"
        return path if path.exists() else None

    def get_waiter(
        self,
        waiter_name: str,
        parameters: dict[str, Any] | None = None,
        config_overrides: dict[str, Any] | None = None,
        deferrable: bool = False,
        client: Any = None,
    ) -> Any:
        return super().get_waiter(
            waiter_name,
            parameters=self.waiter_parameters if parameters is None else parameters,
            config_overrides=config_overrides,
            deferrable=deferrable,
            client=client,
        )

    @classmethod
    def for_region(cls: type[HookT], platform: PlatformConfig, region: str) -> HookT:
        """The hook for `region` using the platform's connection; `region` must be one of the platform's.

        Hooks are kept per process (by class, region and connection): a boto3 client costs a session
        and its service model to build, and a task makes many calls in several regions.
        """
        platform.region(region)  # a ConfigError naming the defined regions otherwise
        key = (cls, region, platform.aws_settings.connection_id, _connection_fingerprint(platform))
        hook = _HOOKS.get(key)
        if hook is None:
            hook = _HOOKS[key] = cls(region_name=region, aws_conn_id=platform.aws_settings.connection_id)
        return hook  # type: ignore[return-value]


_HOOKS: dict[tuple[Any, ...], RegionalAwsHook] = {}


def _connection_fingerprint(platform: PlatformConfig) -> str:
    """Changes when the connection is redefined through the environment (tests point it elsewhere)."""
    import os

    return os.environ.get(f"AIRFLOW_CONN_{platform.aws_settings.connection_id.upper()}", "")


def clear_hook_cache() -> None:
    _HOOKS.clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}
