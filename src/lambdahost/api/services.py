"""Every AWS service on the endpoint, registered in this one place.

Adding a service: its handlers and a `<name>_api(platform)` builder under `api/<name>/`, its
resources and rules under `control/<name>/`, and one line below. docs/architecture.md has
the whole recipe."""

from __future__ import annotations

from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.api.lambda_.service import lambda_api
from lambdahost.api.logs.service import logs_api
from lambdahost.api.service import ServiceApi
from lambdahost.api.sts.service import sts_api
from lambdahost.platform import AccountPlane


def all_services(platform: AccountPlane, code_urls: CodeUrls) -> list[ServiceApi]:
    """The first is the default: it answers requests that match no service."""
    return [lambda_api(platform, code_urls), logs_api(platform), sts_api(platform)]
