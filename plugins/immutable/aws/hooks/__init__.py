"""Hooks in the Amazon provider's style: one per service, each owns every call to it.

`RegionalAwsHook` is AwsBaseHook bound to one region with retries that back off on throttling
(botocore's adaptive mode); subclasses set `client_type`. Build them with `for_region(platform,
region)` so the platform's `aws.connection_id` (and its `endpoint_url` extra, for an emulator) is
used everywhere.
"""

from __future__ import annotations

from immutable.aws.hooks.base import RegionalAwsHook, error_code, retry_config, tag_dict, tag_list

__all__ = ["RegionalAwsHook", "error_code", "retry_config", "tag_dict", "tag_list"]
