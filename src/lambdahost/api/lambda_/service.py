"""The Lambda API as the front door serves it: each handler group with its collaborators."""

from __future__ import annotations

from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.api.lambda_.concurrency import ConcurrencyHandlers
from lambdahost.api.lambda_.event_configs import EventConfigHandlers
from lambdahost.api.lambda_.functions import FunctionHandlers
from lambdahost.api.lambda_.invoke import InvokeHandlers
from lambdahost.api.lambda_.layers import LayerHandlers
from lambdahost.api.lambda_.mappings import MappingHandlers
from lambdahost.api.lambda_.permissions import PermissionHandlers
from lambdahost.api.lambda_.streaming import StreamingHandlers
from lambdahost.api.lambda_.urls import UrlHandlers
from lambdahost.api.lambda_.versions import VersionHandlers
from lambdahost.api.service import ServiceApi, handlers_of
from lambdahost.api.wire import service_model
from lambdahost.control.request_limits import lambda_body_limit
from lambdahost.platform import AccountPlane


def lambda_api(platform: AccountPlane, code_urls: CodeUrls) -> ServiceApi:
    p = platform
    handlers = handlers_of(
        FunctionHandlers(
            p.functions,
            p.versions,
            p.aliases,
            p.concurrency,
            code_urls,
            p.settings.account_concurrency,
        ),
        VersionHandlers(p.versions, p.aliases),
        LayerHandlers(p.layers, code_urls),
        InvokeHandlers(p.invoker),
        StreamingHandlers(p.invoker),
        ConcurrencyHandlers(p.concurrency, p.provisioned, p.functions),
        EventConfigHandlers(p.event_configs),
        PermissionHandlers(p.permissions),
        UrlHandlers(p.urls),
        MappingHandlers(p.mappings),
    )
    return ServiceApi(service_model("lambda"), handlers, body_limit=lambda_body_limit)
