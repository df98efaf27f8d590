"""Functions, tags and account settings."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.concurrency import ConcurrencyService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.versions import VersionService


class FunctionHandlers:
    def __init__(
        self,
        functions: FunctionService,
        versions: VersionService,
        aliases: AliasService,
        concurrency: ConcurrencyService,
        code_urls: CodeUrls,
        account_concurrency: int,
    ) -> None:
        self.functions = functions
        self.versions = versions
        self.aliases = aliases
        self.concurrency = concurrency
        self.code_urls = code_urls
        self.account_concurrency = account_concurrency

    @operation("CreateFunction")
    async def create_function(self, call: Call) -> Output:
        config = await run_in_threadpool(self.functions.create, call.params)
        published = await self._publish_if_asked(call, config)
        if published is not config:
            # AWS answers the new version's configuration under the function's own ARN
            # (recorded AWS answers, localstack test_lambda_api.snapshot.json:
            # test_publish_version_on_create, test_list_functions create_response_1).
            published = {**published, "FunctionArn": config["FunctionArn"]}
        return published

    async def _publish_if_asked(self, call: Call, config: Output) -> Output:
        """With Publish=True, the version published with the change: Pending until it
        settles, as AWS answers (localstack test_lambda.snapshot.json:
        update_lambda_response_with_publish)."""
        if not call.params.get("Publish"):
            return config
        return await run_in_threadpool(
            lambda: self.versions.publish(config["FunctionName"], during_change=True)
        )

    def _version(self, call: Call) -> tuple[str, str | None]:
        """The function and the version a (possibly alias) qualifier names."""
        p = call.params
        name = self.functions.ref(p["FunctionName"]).name
        return name, self.aliases.version_for(p["FunctionName"], p.get("Qualifier"))

    @operation("GetFunction")
    async def get_function(self, call: Call) -> Output:
        fv = await run_in_threadpool(lambda: self.functions.get(*self._version(call)))
        output: Output = {
            "Configuration": fv.config,
            "Code": {
                "RepositoryType": "S3",
                "Location": self.code_urls.url_for(call.base_url, fv.code_sha256),
            },
        }
        if fv.tags:
            output["Tags"] = fv.tags
        concurrency = await run_in_threadpool(self.concurrency.get_reserved, fv.configuration.name)
        if concurrency:
            output["Concurrency"] = concurrency
        return output

    @operation("GetFunctionConfiguration")
    async def get_function_configuration(self, call: Call) -> Output:
        fv = await run_in_threadpool(lambda: self.functions.get(*self._version(call)))
        return fv.config

    @operation("ListFunctions")
    async def list_functions(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.functions.list,
            p.get("Marker"),
            p.get("MaxItems"),
            p.get("FunctionVersion") == "ALL",
        )

    @operation("UpdateFunctionCode")
    async def update_function_code(self, call: Call) -> Output:
        config = await run_in_threadpool(self.functions.update_code, call.params)
        return await self._publish_if_asked(call, config)

    @operation("UpdateFunctionConfiguration")
    async def update_function_configuration(self, call: Call) -> Output:
        return await run_in_threadpool(self.functions.update_configuration, call.params)

    @operation("DeleteFunction")
    async def delete_function(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(self.functions.delete, p["FunctionName"], p.get("Qualifier"))
        return {"StatusCode": 204}

    @operation("TagResource")
    async def tag_resource(self, call: Call) -> Output:
        await run_in_threadpool(self.functions.tag, call.params["Resource"], call.params["Tags"])
        return {}

    @operation("UntagResource")
    async def untag_resource(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(self.functions.untag, p["Resource"], p["TagKeys"])
        return {}

    @operation("ListTags")
    async def list_tags(self, call: Call) -> Output:
        tags = await run_in_threadpool(self.functions.tags_of, call.params["Resource"])
        return {"Tags": tags}

    @operation("GetAccountSettings")
    async def get_account_settings(self, call: Call) -> Output:
        count, total = await run_in_threadpool(self.functions.count_and_size)
        return {
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800,
                "CodeSizeUnzipped": 262_144_000,
                "CodeSizeZipped": 52_428_800,
                "ConcurrentExecutions": self.account_concurrency,
                "UnreservedConcurrentExecutions": await run_in_threadpool(
                    self.concurrency.unreserved
                ),
            },
            "AccountUsage": {"TotalCodeSize": total, "FunctionCount": count},
        }

    @operation("GetFunctionRecursionConfig")
    async def get_function_recursion_config(self, call: Call) -> Output:
        return await run_in_threadpool(self.functions.recursion_config, call.params["FunctionName"])

    @operation("PutFunctionRecursionConfig")
    async def put_function_recursion_config(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.functions.put_recursion_config, p["FunctionName"], p["RecursiveLoop"]
        )

    @operation("GetFunctionCodeSigningConfig")
    async def get_function_code_signing_config(self, call: Call) -> Output:
        return await run_in_threadpool(
            self.functions.code_signing_config, call.params["FunctionName"]
        )
