"""What this server does with each runtime identifier AWS knows (botocore's `Runtime` enum).

Every identifier gets one of three answers (host side only, next to the registry):

- served natively: it is a key of `RUNTIMES`;
- served by the nearest newer interpreter of the same language that is served here and says
  it may stand in for older ones (`Runtime.serves_older`); the environment then runs, and its
  INIT_START line and `AWS_EXECUTION_ENV` name, the runtime that serves it;
- refused, with one `InvalidParameterValueException` message: AWS's own for the runtimes AWS
  no longer lets anyone create functions with, ours (naming what this server serves) for the
  rest.

Nothing here raises: `control/` turns a refusal into the error."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from lambdahost.runtimes import RUNTIMES, SUPPORTED, Runtime, runtime_version_arn

# Runtimes whose "Block function create" date has passed, from the deprecated runtimes table
# of https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html (the dates are AWS's).
# Runtimes deprecated later are still creatable on AWS until their own block date.
BLOCKED_ON_CREATE: dict[str, str] = {
    "nodejs": "2016-09-30",
    "nodejs4.3": "2020-02-03",
    "nodejs4.3-edge": "2019-03-31",
    "nodejs6.10": "2019-07-12",
    "nodejs8.10": "2020-02-04",
    "nodejs10.x": "2021-07-30",
    "nodejs12.x": "2023-03-31",
    "nodejs14.x": "2024-01-09",
    "python2.7": "2021-07-15",
    "python3.6": "2022-07-18",
    "python3.7": "2024-01-09",
    "java8": "2024-02-08",
    "go1.x": "2024-02-08",
    "provided": "2024-02-08",
    "ruby2.5": "2021-07-30",
    "ruby2.7": "2024-01-09",
    "dotnetcore1.0": "2019-06-30",
    "dotnetcore2.0": "2019-04-30",
    "dotnetcore2.1": "2022-01-05",
    "dotnetcore3.1": "2023-04-03",
}
# The runtime AWS's refusal recommends: the newest runtime of the language AWS offers (Go
# functions move to the OS-only runtime).
NEWEST: dict[str, str] = {
    "nodejs": "nodejs24.x",
    "python": "python3.14",
    "java": "java25",
    "dotnet": "dotnet10",
    "ruby": "ruby3.4",
    "go": "provided.al2023",
    "provided": "provided.al2023",
}


@dataclass(frozen=True)
class Decision:
    """The answer for one runtime identifier."""

    runtime: str
    served_by: str | None  # the `RUNTIMES` key that runs it; None when refused
    refusal: str | None = None  # the InvalidParameterValueException message when refused

    @property
    def native(self) -> bool:
        return self.served_by == self.runtime

    @property
    def note(self) -> str | None:
        """What to tell the user when another interpreter serves the runtime."""
        if self.served_by is None or self.native:
            return None
        return f"{self.runtime} is served here by the {self.served_by} runtime."


def language(runtime: str) -> str:
    """`python3.12` -> python, `nodejs20.x` -> nodejs, `dotnetcore3.1` -> dotnet, `go1.x` -> go."""
    family = re.match(r"[a-z]+", runtime)
    name = family.group(0) if family else runtime
    return "dotnet" if name.startswith("dotnet") else name


def version_of(runtime: str) -> tuple[int, ...]:
    """The language version an identifier names: `python3.12` -> (3, 12), `nodejs20.x` -> (20,)."""
    found = re.match(r"[a-z]+(\d+(?:\.\d+)*)", runtime)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def decide(runtime: str) -> Decision:
    """What this server does with `runtime` (an identifier of botocore's `Runtime` enum)."""
    if runtime in RUNTIMES:
        return Decision(runtime, runtime)
    if runtime in BLOCKED_ON_CREATE:
        newer = NEWEST.get(language(runtime), NEWEST["provided"])
        return Decision(
            runtime,
            None,
            # AWS's wording, e.g. "The runtime parameter of nodejs8.10 is no longer supported
            # for creating or updating AWS Lambda functions. We recommend you use the new
            # runtime (nodejs12.x) while creating or updating functions." (seen in AWS's
            # answers to CreateFunction; the recommendation is the language's newest runtime).
            f"The runtime parameter of {runtime} is no longer supported for creating or "
            "updating AWS Lambda functions. We recommend you use the new runtime "
            f"({newer}) while creating or updating functions.",
        )
    stand_in = _nearest_newer(runtime)
    if stand_in is not None:
        return Decision(runtime, stand_in.name)
    return Decision(
        runtime,
        None,
        f"The runtime parameter of {runtime} is not supported by lambdahost. "
        f"Supported runtimes: {', '.join(SUPPORTED)}.",
    )


def served_by(runtime: str) -> str:
    """The `RUNTIMES` key that runs functions of `runtime` (itself when served natively)."""
    return decide(runtime).served_by or runtime


def _nearest_newer(runtime: str) -> Runtime | None:
    wanted = version_of(runtime)
    if not wanted:
        return None
    candidates = [
        entry
        for entry in RUNTIMES.values()
        if entry.serves_older
        and language(entry.name) == language(runtime)
        and version_of(entry.name) > wanted
    ]
    return min(candidates, key=lambda entry: version_of(entry.name), default=None)


@cache
def aws_runtimes() -> tuple[str, ...]:
    """Every runtime identifier of botocore's Lambda model (the `Runtime` enum)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("lambda")
    return tuple(model.shape_for("Runtime").enum)


def version_arn(runtime: str, region: str) -> str:
    """`RuntimeVersionConfig.RuntimeVersionArn` of a function of `runtime`: the ARN of the
    runtime that serves it, the same its environments print on their INIT_START line."""
    return runtime_version_arn(served_by(runtime), region)
