"""`lambdahost invoke`: call a function on a running server and show what came back.

Also home of `connect`, the boto3 client both client commands (`invoke`, `logs`) use."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from lambdahost.config import default_data_dir

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"

EndpointOption = typer.Option(
    DEFAULT_ENDPOINT,
    "--endpoint-url",
    envvar="LAMBDAHOST_ENDPOINT_URL",
    help="The lambdahost server to talk to.",
)
DataDirOption = typer.Option(
    None,
    "--data-dir",
    help="Where to find the server's `credentials` file when no credentials are in the "
    "environment (default: $LAMBDAHOST_DATA_DIR or ./.lambdahost).",
)
RegionOption = typer.Option(
    "us-east-1", "--region", envvar=["AWS_REGION", "AWS_DEFAULT_REGION"], help="Region to sign for."
)


def find_credentials(data_dir: Path | None) -> tuple[str, str] | None:
    """AWS env vars, else $LAMBDAHOST_ACCESS_KEY_ID/SECRET, else the data dir's `credentials`
    file. Never creates credentials: that is the server's job."""
    env = os.environ
    for key_var, secret_var in (
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("LAMBDAHOST_ACCESS_KEY_ID", "LAMBDAHOST_SECRET_ACCESS_KEY"),
    ):
        if env.get(key_var) and env.get(secret_var):
            return env[key_var], env[secret_var]
    path = (data_dir or default_data_dir()) / "credentials"
    if path.is_file():
        stored = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        key, secret = stored.get("aws_access_key_id"), stored.get("aws_secret_access_key")
        if key and secret:
            return key.strip(), secret.strip()
    return None


def connect(service: str, endpoint_url: str, region: str, data_dir: Path | None) -> Any:
    import boto3
    from botocore.config import Config

    found = find_credentials(data_dir)
    keys = {"aws_access_key_id": found[0], "aws_secret_access_key": found[1]} if found else {}
    # Otherwise boto3's own chain (a profile in ~/.aws) gets its chance.
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        # No retries: a retried Invoke would run the function twice.
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=960),
        **keys,
    )


@contextmanager
def friendly_errors(endpoint_url: str) -> Iterator[None]:
    """Turn the usual client failures into one red line and exit status 1."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except EndpointConnectionError:
        err.print(
            f"[red]Cannot reach lambdahost at {endpoint_url}[/] (is `lambdahost serve` running? "
            "set --endpoint-url or $LAMBDAHOST_ENDPOINT_URL)"
        )
        raise typer.Exit(1) from None
    except NoCredentialsError:
        err.print(
            "[red]No credentials found.[/] Export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY as "
            "`lambdahost serve` printed them, or point --data-dir at the server's data directory."
        )
        raise typer.Exit(1) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        err.print(
            Text.assemble(
                (f"{error.get('Code', 'Error')}: ", "bold red"), (error.get("Message", ""), "red")
            )
        )
        raise typer.Exit(1) from None


def read_payload(payload: str | None) -> bytes:
    """JSON text, or `@path` to read it from a file; checked here so typos fail fast."""
    if payload is None:
        return b"{}"
    text = Path(payload[1:]).read_text() if payload.startswith("@") else payload
    try:
        json.loads(text)
    except ValueError as exc:
        err.print(f"[red]--payload is not valid JSON:[/] {exc}")
        raise typer.Exit(2) from None
    return text.encode()


def invoke(
    name: str = typer.Argument(..., help="Function name or ARN (optionally NAME:QUALIFIER)."),
    payload: str = typer.Option(
        None, "--payload", "-p", help="The event as JSON, or @FILE to read it from a file."
    ),
    run_async: bool = typer.Option(
        False, "--async", help="Queue the event (InvocationType=Event) and return at once."
    ),
    qualifier: str = typer.Option(None, "--qualifier", "-q", help="Version or alias."),
    endpoint_url: str = EndpointOption,
    data_dir: Path = DataDirOption,
    region: str = RegionOption,
) -> None:
    """Invoke a function on a running lambdahost and print its response."""
    body = read_payload(payload)
    lam = connect("lambda", endpoint_url, region, data_dir)
    params: dict[str, Any] = {"FunctionName": name, "Payload": body}
    if qualifier:
        params["Qualifier"] = qualifier
    with friendly_errors(endpoint_url):
        if run_async:
            response = lam.invoke(InvocationType="Event", **params)
            request_id = response["ResponseMetadata"].get("RequestId", "")
            err.print(f"[green]Queued[/] {name} [dim](RequestId {request_id})[/]")
            return
        response = lam.invoke(LogType="Tail", **params)
    result = response["Payload"].read()
    function_error = response.get("FunctionError")
    if function_error:
        show_function_error(result, function_error)
    else:
        show_payload(result)
    if response.get("LogResult"):
        tail = base64.b64decode(response["LogResult"]).decode("utf-8", "replace")
        err.print(Text(tail.rstrip("\n"), style="dim"))
    if function_error:
        raise typer.Exit(1)


def show_payload(result: bytes) -> None:
    text = result.decode("utf-8", "replace")
    try:
        out.print_json(text, highlight=out.is_terminal)
    except ValueError:
        out.print(Text(text))


def show_function_error(result: bytes, kind: str) -> None:
    try:
        error = json.loads(result)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        err.print(Text(f"Function error ({kind}): {result.decode('utf-8', 'replace')}", "red"))
        return
    headline = f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
    err.print(Text(headline, style="bold red"))
    for frame in error.get("stackTrace") or []:
        err.print(Text(str(frame).rstrip("\n"), style="red"))
    # The document itself still goes to stdout, so scripts can read it as AWS returns it.
    show_payload(result)
