"""The Telemetry API and the Logs API: an extension from a layer subscribes and receives
platform events and function log lines at its own HTTP listener inside the environment."""

from __future__ import annotations

import json

from helpers import create_function, make_zip, unique
from test_extensions import publish_extension

# Listens on :4243 (Telemetry API) and :4244 (Logs API); GET / answers what arrived.
SUBSCRIBER = r"""#!/usr/bin/python3.11
import http.client, http.server, json, os, sys, threading
name = os.path.basename(sys.argv[0])

def listener(port, seen):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def do_GET(self):
            data = json.dumps(seen).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

telemetry, logs = [], []
listener(4243, telemetry)
listener(4244, logs)
api = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
api.request("POST", "/2020-01-01/extension/register", json.dumps({"events": ["SHUTDOWN"]}),
            {"Lambda-Extension-Name": name})
response = api.getresponse()
ext_id = response.getheader("Lambda-Extension-Identifier")
response.read()
def subscribe(path, port, body):
    body["destination"] = {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/in"}
    api.request("PUT", path, json.dumps(body), {"Lambda-Extension-Identifier": ext_id})
    response = api.getresponse()
    print(name, "subscribed", path, response.status, response.read().decode(), flush=True)
buffering = {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25}
subscribe("/2022-07-01/telemetry", 4243, {"schemaVersion": "2022-12-13", "buffering": buffering,
          "types": ["platform", "function", "extension"]})
subscribe("/2020-08-15/logs", 4244, {"types": ["platform", "function"], "buffering": buffering})
api.request("PUT", "/2022-07-01/telemetry", json.dumps({"schemaVersion": "1999", "types": []}),
            {"Lambda-Extension-Identifier": ext_id})
response = api.getresponse()
print(name, "invalid subscription", response.status, response.read().decode(), flush=True)
while True:
    api.request("GET", "/2020-01-01/extension/event/next",
                headers={"Lambda-Extension-Identifier": ext_id})
    if json.loads(api.getresponse().read())["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""

HANDLER = r"""import json, time, urllib.request
def fetch(port):
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/").read())
def handler(event, context):
    print("handling", context.aws_request_id)
    if "query" not in event:
        return context.aws_request_id
    deadline = time.time() + 8
    while True:  # the report of an invoke is delivered after it ended
        telemetry = fetch(4243)
        reports = {e["record"]["requestId"] for e in telemetry if e["type"] == "platform.report"}
        if set(event["query"]) <= reports or time.time() > deadline:
            return {"telemetry": telemetry, "logs": fetch(4244)}
        time.sleep(0.05)
"""


def test_telemetry_and_logs_api_subscribers(lam) -> None:  # noqa: ANN001
    layer = publish_extension(lam, "telemetry", {"extensions/subscriber": SUBSCRIBER})
    name = unique("telemetry")
    create_function(lam, name, make_zip({"app.py": HANDLER}), Layers=[layer], Timeout=15)
    ids = []
    for _ in range(3):
        response = lam.invoke(FunctionName=name, Payload=b"{}")
        ids.append(json.loads(response["Payload"].read()))
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"query": ids}).encode())
    seen = json.loads(response["Payload"].read())
    telemetry, logs = seen["telemetry"], seen["logs"]

    def records(events: list[dict], kind: str) -> dict[str, dict]:
        return {e["record"]["requestId"]: e["record"] for e in events if e["type"] == kind}

    starts = records(telemetry, "platform.start")
    done = records(telemetry, "platform.runtimeDone")
    reports = records(telemetry, "platform.report")
    for request_id in ids:
        assert starts[request_id]["version"] == "$LATEST"
        assert done[request_id]["status"] == "success"
        metrics = reports[request_id]["metrics"]
        assert metrics["memorySizeMB"] == 128 and metrics["billedDurationMs"] >= 1
        assert metrics["durationMs"] > 0 and metrics["maxMemoryUsedMB"] > 0
    assert "initDurationMs" in reports[ids[0]]["metrics"]
    assert "initDurationMs" not in reports[ids[1]]["metrics"]
    types = {e["type"] for e in telemetry}
    assert {"platform.initStart", "platform.initRuntimeDone", "platform.initReport"} <= types
    assert {"platform.extension", "platform.telemetrySubscription"} <= types
    functions = [e["record"] for e in telemetry if e["type"] == "function"]
    assert f"handling {ids[0]}" in functions
    assert all(e["time"].endswith("Z") and "T" in e["time"] for e in telemetry)
    # The Logs API: its own record shapes (platform.end, no init events).
    kinds = {e["type"] for e in logs}
    assert {"platform.start", "platform.end", "platform.report", "function"} <= kinds
    assert not any(kind.startswith("platform.init") for kind in kinds)
    assert {e["record"]["requestId"] for e in logs if e["type"] == "platform.end"} >= set(ids)
    # The subscriber's own output (extension lines) goes to the function's log too.
    log_lines = [line for e in telemetry if e["type"] == "extension" for line in [e["record"]]]
    assert any("subscribed /2022-07-01/telemetry 200 OK" in line for line in log_lines)
    assert any("invalid subscription 400" in line for line in log_lines)
