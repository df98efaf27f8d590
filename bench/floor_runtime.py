"""The floor's runtime loop: the least a Python runtime can do (stdlib, keep-alive, no-op
handler returning {}). Runs under `/usr/bin/python3.11 -S`, like lambdahost's runtime."""

import http.client
import os

host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
prefix = os.environ.get("FLOOR_PREFIX", "") + "/2018-06-01/runtime/invocation/"
once = bool(os.environ.get("FLOOR_ONCE"))
connection = http.client.HTTPConnection(host, int(port))


def handler(event: bytes) -> bytes:
    return b"{}"


while True:
    connection.request("GET", prefix + "next")
    response = connection.getresponse()
    event = response.read()
    request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
    connection.request("POST", f"{prefix}{request_id}/response", body=handler(event))
    connection.getresponse().read()
    if once:
        break
