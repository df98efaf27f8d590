"""The AWS SDKs the managed runtimes ship (boto3 for python3.11, the JS SDK v3 for nodejs20.x),
loaded by real functions in real sandboxes: the pinned versions, where AWS has them, and a
copy in the function's zip or a layer winning over the runtime's. Only loading: calling the
platform from inside a function is the business of networking and credentials."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import create_function, make_zip, start_server, unique

PINS = Path(__file__).resolve().parents[2] / "sdks"
PYTHON_SDK = "/var/lang/lib/python3.11/site-packages"
NODE_SDK = "/var/runtime/node_modules"


def python_pin(package: str) -> str:
    text = (PINS / "python3.11" / "requirements.txt").read_text()
    match = re.search(rf"^{package}==(\S+)", text, re.M)
    assert match, package
    return match[1]


NODE_PACKAGES: dict[str, str] = json.loads((PINS / "nodejs20.x" / "package.json").read_text())[
    "dependencies"
]


def invoke(lam, name: str, payload: object = None) -> tuple[dict, object]:  # noqa: ANN001
    response = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}))
    return response, json.loads(response["Payload"].read())


def result(lam, name: str, payload: object = None) -> object:  # noqa: ANN001
    response, body = invoke(lam, name, payload)
    assert "FunctionError" not in response, body
    return body


def publish(lam, files: dict[str, str]) -> str:  # noqa: ANN001
    content = {"ZipFile": make_zip(files)}
    return lam.publish_layer_version(LayerName=unique("sdk-layer"), Content=content)[
        "LayerVersionArn"
    ]


def python_function(lam, files: dict[str, str], **kw: object) -> str:  # noqa: ANN001
    name = unique("py-sdk")
    create_function(lam, name, make_zip(files), Timeout=30, MemorySize=256, **kw)
    return name


def node_function(lam, files: dict[str, str], handler: str = "index.handler", **kw) -> str:  # noqa: ANN001
    name = unique("node-sdk")
    create_function(
        lam,
        name,
        make_zip(files),
        Runtime="nodejs20.x",
        Handler=handler,
        Timeout=30,
        MemorySize=256,
        **kw,
    )
    return name


# -- python3.11 -------------------------------------------------------------------------------
PY_SDK_HANDLER = """\
import os, sys
import boto3, botocore
from importlib.metadata import version

def handler(event, context):
    client = boto3.client("lambda", region_name="us-east-1", endpoint_url="http://127.0.0.1:1")
    return {
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "metadata": version("boto3"),
        "file": boto3.__file__,
        "path": sys.path[:6],
        "operations": len(client.meta.service_model.operation_names),
        "writable": os.access(boto3.__file__, os.W_OK),
    }
"""


def test_python_runtime_ships_the_pinned_boto3(lam) -> None:
    """A top-level `import boto3, botocore` works, gives the pinned versions, from AWS's place
    for them, searched after the code and the layers (AWS's python3.11 order)."""
    body = result(lam, python_function(lam, {"app.py": PY_SDK_HANDLER}))
    assert isinstance(body, dict)
    assert body["boto3"] == body["metadata"] == python_pin("boto3")
    assert body["botocore"] == python_pin("botocore")
    assert body["file"] == f"{PYTHON_SDK}/boto3/__init__.py"
    assert body["path"] == [
        "/var/task",
        "/opt/python/lib/python3.11/site-packages",
        "/opt/python",
        PYTHON_SDK,
        "/var/runtime",
        "/usr/lib/python311.zip",
    ]
    assert body["operations"] > 50  # botocore's service models load from the read-only mount
    assert body["writable"] is False


FAKE_BOTO3 = "__version__ = {!r}\n"
WHICH_BOTO3 = (
    "import boto3, botocore\n"
    "def handler(event, context):\n"
    "    return [boto3.__version__, boto3.__file__, botocore.__version__]\n"
)


def test_a_boto3_in_the_zip_or_a_layer_wins(lam) -> None:
    layer = publish(lam, {"python/boto3/__init__.py": FAKE_BOTO3.format("in-layer")})
    zipped = {"app.py": WHICH_BOTO3, "boto3/__init__.py": FAKE_BOTO3.format("in-zip")}
    botocore = python_pin("botocore")
    name = python_function(lam, zipped)
    assert result(lam, name) == ["in-zip", "/var/task/boto3/__init__.py", botocore]
    name = python_function(lam, {"app.py": WHICH_BOTO3}, Layers=[layer])
    assert result(lam, name) == ["in-layer", "/opt/python/boto3/__init__.py", botocore]
    name = python_function(lam, zipped, Layers=[layer])  # the code before the layers
    assert result(lam, name)[0] == "in-zip"  # type: ignore[index]


# -- nodejs20.x -------------------------------------------------------------------------------
NODE_CJS = """\
const { LambdaClient } = require("@aws-sdk/client-lambda");
exports.handler = async (event) => {
  const loaded = event.packages.filter((name) => Object.keys(require(name)).length > 0);
  const client = new LambdaClient({ region: "us-east-1", endpoint: "http://127.0.0.1:1" });
  return {
    client: typeof client.send,
    version: require("@aws-sdk/client-lambda/package.json").version,
    file: require.resolve("@aws-sdk/client-lambda"),
    loaded,
  };
};
"""
NODE_ESM = """\
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { LambdaClient } from "@aws-sdk/client-lambda";
import { DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";
const require = createRequire(import.meta.url);
export const handler = async (event) => {
  const loaded = [];
  for (const name of event.packages) {
    if (Object.keys(await import(name)).length > 0) loaded.push(name);
  }
  return {
    client: typeof new LambdaClient({ region: "us-east-1" }).send,
    documents: typeof DynamoDBDocumentClient.from,
    version: require("@aws-sdk/client-lambda/package.json").version,
    file: fileURLToPath(import.meta.resolve("@aws-sdk/client-lambda")),
    loaded,
  };
};
"""


def test_node_runtime_ships_the_js_sdk_for_require_and_import(lam) -> None:
    """CommonJS `require` and ES module `import` both find the runtime's SDK, under
    /var/runtime/node_modules as on AWS, with every client package the project ships."""
    packages = sorted(NODE_PACKAGES)
    lambda_version = NODE_PACKAGES["@aws-sdk/client-lambda"]
    cjs = result(lam, node_function(lam, {"index.js": NODE_CJS}), {"packages": packages})
    assert cjs == {
        "client": "function",
        "version": lambda_version,
        "file": f"{NODE_SDK}/@aws-sdk/client-lambda/dist-cjs/index.js",
        "loaded": packages,
    }
    esm = result(lam, node_function(lam, {"index.mjs": NODE_ESM}), {"packages": packages})
    assert isinstance(esm, dict)
    assert (esm["client"], esm["documents"], esm["version"]) == (
        "function",
        "function",
        lambda_version,
    )
    assert esm["file"].startswith(f"{NODE_SDK}/@aws-sdk/client-lambda/")
    assert esm["loaded"] == packages


TOP_LEVEL_AWAIT = """\
import { LambdaClient } from "@aws-sdk/client-lambda";
const started = await new Promise((resolve) => setTimeout(() => resolve("after await"), 10));
export const handler = async (event) => ({ started, client: typeof LambdaClient, n: event.n });
"""


def test_node_esm_index_js_with_top_level_await(lam) -> None:
    """`index.js` in a "type": "module" package awaiting at its top level runs, as on AWS."""
    files = {"package.json": '{"type": "module"}', "index.js": TOP_LEVEL_AWAIT}
    body = result(lam, node_function(lam, files), {"n": 3})
    assert body == {"started": "after await", "client": "function", "n": 3}


FAKE_CLIENT = {
    "package.json": '{"name": "@aws-sdk/client-lambda", "version": "0.0.0", "main": "index.js"}',
    "index.js": "exports.origin = ORIGIN;\nexports.LambdaClient = class {};\n",
}
WHICH_CJS = """\
exports.handler = async () => [
  require("@aws-sdk/client-lambda").origin,
  require.resolve("@aws-sdk/client-sts"),
];
"""
WHICH_ESM = """\
import { origin } from "@aws-sdk/client-lambda";
import { STSClient } from "@aws-sdk/client-sts";
export const handler = async () => [origin, typeof STSClient];
"""


def fake_client(prefix: str, origin: str) -> dict[str, str]:
    return {
        f"{prefix}/{path}": text.replace("ORIGIN", repr(origin))
        for path, text in FAKE_CLIENT.items()
    }


@pytest.mark.parametrize("where", ["zip", "layer"])
def test_a_js_sdk_in_the_zip_or_a_layer_wins(lam, where: str) -> None:
    """A copy of a client in the function's node_modules or a layer's nodejs/node_modules wins
    over the runtime's, for `require` and for `import`; the rest still comes from the runtime."""
    module_dir = "node_modules/@aws-sdk/client-lambda"
    if where == "zip":
        bundled, layers = fake_client(module_dir, "zip"), {}
    else:
        layer = publish(lam, fake_client(f"nodejs/{module_dir}", "layer"))
        bundled, layers = {}, {"Layers": [layer]}
    cjs = result(lam, node_function(lam, {"index.js": WHICH_CJS, **bundled}, **layers))
    assert cjs == [where, f"{NODE_SDK}/@aws-sdk/client-sts/dist-cjs/index.js"]
    esm = result(lam, node_function(lam, {"index.mjs": WHICH_ESM, **bundled}, **layers))
    assert esm == [where, "function"]


# -- without the SDKs ---------------------------------------------------------------------------
def test_functions_run_without_installed_sdks(tmp_path: Path) -> None:
    """A server whose host has no SDKs installed still runs functions, without an SDK (an import
    fails as on a runtime that ships none), and says so once per runtime in its log."""
    empty = tmp_path / "no-sdks"
    empty.mkdir()
    server = start_server(tmp_path / "data", env={"LAMBDAHOST_RUNTIME_SDKS": str(empty)})
    try:
        lam = server.client("lambda")
        plain = python_function(lam, {"app.py": "def handler(e, c):\n    return 'fine'\n"})
        assert result(lam, plain) == "fine"
        response, body = invoke(lam, python_function(lam, {"app.py": WHICH_BOTO3}))
        assert response["FunctionError"] == "Unhandled"
        assert isinstance(body, dict) and body["errorType"] == "Runtime.ImportModuleError"
        assert "No module named 'boto3'" in body["errorMessage"]
        response, body = invoke(lam, node_function(lam, {"index.mjs": WHICH_ESM}))
        assert isinstance(body, dict) and body["errorType"] == "Runtime.ImportModuleError"
        assert "@aws-sdk/client-lambda" in body["errorMessage"]
        assert (
            result(lam, node_function(lam, {"index.js": "exports.handler = async () => 1;"})) == 1
        )
    finally:
        server.kill()
    log = server.log()
    for runtime in ("python3.11", "nodejs20.x"):
        assert log.count(f"{runtime} functions run without the AWS SDK") == 1, log
