"""The `lambdahost` command."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from lambdahost.cli.invoke import invoke
from lambdahost.cli.logs import logs
from lambdahost.config import (
    DEFAULT_ACCOUNT,
    Settings,
    add_credentials,
    check_budget,
    default_data_dir,
    load_credentials,
    read_credentials_file,
)

app = typer.Typer(help="lambdahost: a self-hosted, AWS-Lambda-compatible serverless platform.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """lambdahost: run AWS Lambda functions on this machine."""


app.command()(invoke)
app.command()(logs)
credentials_app = typer.Typer(help="Access keys of the server's accounts (in the data dir).")
app.add_typer(credentials_app, name="credentials")

DATA_DIR_HELP = "The server's data dir [default: $LAMBDAHOST_DATA_DIR or ./.lambdahost]."


@credentials_app.command("add")
def credentials_add(
    account: str = typer.Option(..., "--account", help="The 12-digit account id of the key."),
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
    region: str = typer.Option("us-east-1", envvar="LAMBDAHOST_REGION"),
) -> None:
    """Create an access key for an account (a new account when none has keys yet) and print
    it. A running server accepts it at once."""
    directory = (data_dir or default_data_dir()).resolve()
    try:
        creds = add_credentials(directory, account)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--account") from None
    console.print(f"[green]Added an access key for account {account} in {directory}[/]")
    print(f"export AWS_ACCESS_KEY_ID={creds.access_key_id}")
    print(f"export AWS_SECRET_ACCESS_KEY={creds.secret_access_key}")
    print(f"export AWS_DEFAULT_REGION={region}")


@credentials_app.command("list")
def credentials_list(
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
    account_id: str = typer.Option(
        DEFAULT_ACCOUNT, envvar="LAMBDAHOST_ACCOUNT_ID", help="The server's default account."
    ),
) -> None:
    """The access keys of the data dir's credentials file and their accounts (no secrets)."""
    path = (data_dir or default_data_dir()).resolve() / "credentials"
    keys = read_credentials_file(path) if path.exists() else []
    for creds in keys:
        print(f"{creds.access_key_id}\t{creds.account_id or account_id}")


@credentials_app.command("revoke-sessions")
def credentials_revoke_sessions(
    role_arn: str = typer.Option(..., "--role-arn", help="The role whose sessions to revoke."),
    data_dir: Path = typer.Option(None, help=DATA_DIR_HELP),
    account_id: str = typer.Option(
        DEFAULT_ACCOUNT, envvar="LAMBDAHOST_ACCOUNT_ID", help="The server's default account."
    ),
) -> None:
    """Revoke the role's active sessions, as AWS's IAM console does: every credential of
    the role issued until now (AssumeRole's, and functions' environments') is denied every
    action; new sessions work. A running server applies it within a second."""
    from lambdahost.control.sts.revocations import SessionRevocations
    from lambdahost.control.sts.tokens import role_parts
    from lambdahost.platform import account_store

    try:
        _, account, _ = role_parts(role_arn)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--role-arn") from None
    directory = (data_dir or default_data_dir()).resolve()
    path = directory / "credentials"
    keys = read_credentials_file(path) if path.exists() else []
    known = {account_id, *(k.account_id for k in keys if k.account_id)}
    if account not in known and not (directory / "accounts" / account).is_dir():
        raise typer.BadParameter(
            f"account {account} has no access keys and no store in {directory}",
            param_hint="--role-arn",
        )
    db = account_store(directory, account, account_id)
    try:
        db.migrate()
        cutoff = SessionRevocations(db).revoke(role_arn)
    finally:
        db.close()
    moment = datetime.fromtimestamp(cutoff / 1000, UTC).isoformat(timespec="milliseconds")
    console.print(f"[green]Sessions of {role_arn} issued before {moment} are revoked.[/]")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(9000, help="Port to listen on."),
    data_dir: Path = typer.Option(
        None,
        help="Where metadata, code and logs live [default: $LAMBDAHOST_DATA_DIR or ./.lambdahost].",
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="Accept unsigned requests (unsafe)."),
    region: str = typer.Option("us-east-1", envvar="LAMBDAHOST_REGION", help="Region in ARNs."),
    account_id: str = typer.Option(
        "000000000000", envvar="LAMBDAHOST_ACCOUNT_ID", help="Account id in ARNs."
    ),
    keepalive: float = typer.Option(
        300.0, envvar="LAMBDAHOST_KEEPALIVE", help="Seconds an idle environment stays warm."
    ),
    sandbox: str = typer.Option(
        "auto",
        envvar="LAMBDAHOST_SANDBOX",
        help="Sandbox backend: zygote (fast cold starts), bwrap, or auto (zygote if it works).",
    ),
    transition_delay: float = typer.Option(
        0.2,
        envvar="LAMBDAHOST_TRANSITION_DELAY",
        help="Seconds a function stays Pending/InProgress after a change.",
    ),
    async_time_scale: float = typer.Option(
        1.0,
        envvar="LAMBDAHOST_ASYNC_TIME_SCALE",
        help="Scale async retry delays and maximum event age (e.g. 0.01 in tests).",
    ),
    memory_budget: str = typer.Option(
        "80%",
        envvar="LAMBDAHOST_MEMORY_BUDGET",
        help="Memory for all environments together (sum of MemorySize): MB, or a % of RAM.",
    ),
    disk_budget: str = typer.Option(
        "80%",
        envvar="LAMBDAHOST_DISK_BUDGET",
        help="Disk for all /tmp volumes together (sum of EphemeralStorage): MB, or a % of "
        "the free space where the data dir is.",
    ),
    pids_budget: int = typer.Option(
        0,
        envvar="LAMBDAHOST_PIDS_BUDGET",
        help="Processes in all environments together [default: half of kernel.pid_max].",
    ),
    cold_starts: int = typer.Option(
        0,
        envvar="LAMBDAHOST_COLD_STARTS",
        help="Cold starts running at once; more wait in line [default: 2 per CPU].",
    ),
    cold_start_queue: int = typer.Option(
        256,
        envvar="LAMBDAHOST_COLD_START_QUEUE",
        help="Cold starts that may wait in line; beyond, invokes get 429 TooManyRequests.",
    ),
    cold_start_wait: float = typer.Option(
        10.0,
        envvar="LAMBDAHOST_COLD_START_WAIT",
        help="Seconds a cold start may wait in line before it gets 429 TooManyRequests.",
    ),
    function_network: str = typer.Option(
        "nat",
        envvar="LAMBDAHOST_FUNCTION_NETWORK",
        help="Functions' network: nat (outbound IPv4 through this host, DNS, this API) or "
        "isolated (none).",
    ),
    function_network_range: str = typer.Option(
        None,
        envvar="LAMBDAHOST_FUNCTION_NETWORK_RANGE",
        help="IPv4 CIDR of the functions' private addresses [default: 100.64.0.0/10].",
    ),
    egress_deny: str = typer.Option(
        None,
        envvar="LAMBDAHOST_EGRESS_DENY",
        help="Comma-separated CIDRs functions may not reach [default: 169.254.0.0/16, "
        "where cloud metadata services live]; '' for none.",
    ),
    function_dns: str = typer.Option(
        "",
        envvar="LAMBDAHOST_FUNCTION_DNS",
        help="Comma-separated resolvers functions' DNS queries go to [default: this "
        "host's, from /etc/resolv.conf].",
    ),
    credentials_lifetime: float = typer.Option(
        3600.0,
        envvar="LAMBDAHOST_CREDENTIALS_LIFETIME",
        min=1.0,
        help="Seconds the execution-role credentials of an environment last; an environment "
        "is replaced before they would expire under a request.",
    ),
    log_level: str = typer.Option("info", envvar="LAMBDAHOST_LOG_LEVEL"),
    access_log: bool = typer.Option(
        False,
        "--access-log",
        envvar="LAMBDAHOST_ACCESS_LOG",
        help="Log one line per request (method, path without query, status, duration, "
        "request id) on the lambdahost.access logger at INFO.",
    ),
) -> None:
    """Start the API server."""
    import uvicorn

    from lambdahost.api.app import create_app
    from lambdahost.cli.listen import bind, gateway_listener
    from lambdahost.platform import Platform
    from lambdahost.sandbox import NetworkSettings, SandboxError

    if sandbox not in ("auto", "zygote", "bwrap"):
        raise typer.BadParameter("must be zygote, bwrap or auto", param_hint="--sandbox")
    for hint, value in (("--memory-budget", memory_budget), ("--disk-budget", disk_budget)):
        try:
            check_budget(value)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=hint) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    data_dir = (data_dir or default_data_dir()).resolve()
    credentials, generated = load_credentials(data_dir)
    settings = Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        region=region,
        account_id=account_id,
        auth=not no_auth,
        keepalive_s=keepalive,
        sandbox=sandbox,
        transition_delay_s=transition_delay,
        async_time_scale=async_time_scale,
        memory_budget=memory_budget,
        disk_budget=disk_budget,
        pids_budget=pids_budget,
        cold_starts=cold_starts,
        cold_start_queue=cold_start_queue,
        cold_start_wait_s=cold_start_wait,
        function_network=function_network,
        function_network_range=function_network_range,
        egress_deny=None if egress_deny is None else _cidrs(egress_deny),
        function_dns=_cidrs(function_dns),
        credentials_lifetime_s=credentials_lifetime,
        credentials=credentials,
    )
    deny, dns = settings.egress_deny, settings.function_dns
    network_checks: list[tuple[str, Callable[[], object]]] = [
        ("--function-network", lambda: NetworkSettings(mode=function_network)),
        ("--function-network-range",
         lambda: function_network_range and NetworkSettings(range=function_network_range)),
        ("--egress-deny", lambda: deny is not None and NetworkSettings(deny=deny)),
        ("--function-dns", lambda: NetworkSettings(dns=dns)),
    ]  # fmt: skip
    for hint, check in network_checks:
        try:
            check()
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=hint) from None
    if no_auth:
        console.print(
            "[bold red]WARNING: authentication is OFF (--no-auth): anyone who can reach "
            f"{host}:{port} can create and run code.[/]"
        )
    elif generated:
        console.print(f"[green]Generated root credentials in {data_dir / 'credentials'}[/]")
    if not no_auth:
        console.print("Use these credentials with the AWS CLI or SDKs:")
        console.print(f"  export AWS_ACCESS_KEY_ID={credentials.access_key_id}")
        console.print(f"  export AWS_SECRET_ACCESS_KEY={credentials.secret_access_key}")
        console.print(f"  export AWS_DEFAULT_REGION={region}")
    try:
        sockets = [bind(host, port)]  # before any sandbox state: the port may be taken
    except OSError as error:
        console.print(f"[bold red]lambdahost cannot listen on {host}:{port}:[/] {error}")
        raise typer.Exit(1) from None
    try:
        platform = Platform(settings)
    except SandboxError as error:  # the host cannot run sandboxes: say why, no traceback
        console.print(f"[bold red]lambdahost cannot start:[/] {error}")
        raise typer.Exit(1) from None
    gateway = platform.pool.backend.gateway
    if (extra := gateway_listener(host, port, gateway)) is not None:
        sockets.append(extra)
    console.print(f"[bold]lambdahost[/] listening on http://{host}:{port} (data in {data_dir})")
    if gateway:
        console.print(f"functions reach it at http://{gateway}:{port} (function network: nat)")
    config = uvicorn.Config(
        create_app(platform, access_log=access_log),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=sockets)


def _cidrs(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


if __name__ == "__main__":
    app()
