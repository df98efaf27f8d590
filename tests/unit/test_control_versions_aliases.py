"""VersionService and AliasService on a temporary SQLite: publishing, alias routing rules, and
what may not be deleted while something points at it."""

from __future__ import annotations

import pytest
from helpers import ROLE, make_zip
from lambda_services import Lambda

from lambdahost.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def active(services: Lambda, name: str, timeout: int = 3) -> dict:
    zip_bytes = make_zip({"app.py": "def handler(event, context):\n    return event\n"})
    config = services.functions.create(
        {
            "FunctionName": name,
            "Runtime": "python3.11",
            "Role": ROLE,
            "Handler": "app.handler",
            "Code": {"ZipFile": zip_bytes},
            "Timeout": timeout,
        }
    )
    services.settle()
    return config


def reconfigure(services: Lambda, name: str, **changes: object) -> None:
    services.functions.update_configuration({"FunctionName": name, **changes})
    services.settle()


def test_publish_numbers_versions_and_skips_identical_snapshots(services: Lambda) -> None:
    active(services, "pub")
    one = services.versions.publish("pub", description="first")
    assert one["Version"] == "1" and one["FunctionArn"] == ARN + "pub:1"
    assert one["State"] == "Active" and one["Description"] == "first"
    assert services.versions.publish("pub")["Version"] == "1"  # nothing changed since
    reconfigure(services, "pub", Timeout=8)
    two = services.versions.publish("pub")
    assert two["Version"] == "2" and two["Timeout"] == 8
    assert services.functions.get("pub", "1").config["Timeout"] == 3  # 1 stays as it was
    listed = services.versions.list("pub", None, None)["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2"]


def test_publish_refusals(services: Lambda) -> None:
    with pytest.raises(ResourceNotFound):
        services.versions.publish("nobody")
    created = active(services, "picky")
    with pytest.raises(InvalidParameterValue, match="CodeSHA256"):  # a 400, as AWS answers
        services.versions.publish("picky", code_sha256="AAAA")
    services.functions.update_configuration({"FunctionName": "picky", "Timeout": 4})
    with pytest.raises(ResourceConflict, match="update is in progress"):
        services.versions.publish("picky")
    services.settle()
    with pytest.raises(PreconditionFailed):
        services.versions.publish("picky", revision_id=created["RevisionId"])


def test_alias_points_at_a_version(services: Lambda) -> None:
    active(services, "al")
    services.versions.publish("al")
    alias = services.aliases.create({"FunctionName": "al", "Name": "live", "FunctionVersion": "1"})
    assert alias["AliasArn"] == ARN + "al:live" and alias["FunctionVersion"] == "1"
    assert services.aliases.get("al", "live") == alias
    assert services.aliases.version_for("al", "live") == "1"
    assert services.aliases.version_for("al", "7") == "7"  # a number names itself
    with pytest.raises(ResourceConflict, match="Alias already exists"):
        services.aliases.create({"FunctionName": "al", "Name": "live", "FunctionVersion": "1"})
    with pytest.raises(ResourceNotFound, match=f"{ARN}al:9"):
        services.aliases.create({"FunctionName": "al", "Name": "next", "FunctionVersion": "9"})
    with pytest.raises(ResourceNotFound, match="Cannot find alias arn"):
        services.aliases.get("al", "nope")


@pytest.mark.parametrize("name", ["123", "$LATEST", "has space", "x" * 129])
def test_alias_names_that_are_refused(services: Lambda, name: str) -> None:
    active(services, "names")
    with pytest.raises(InvalidParameterValue, match="Alias name"):
        services.aliases.create(
            {"FunctionName": "names", "Name": name, "FunctionVersion": "$LATEST"}
        )


def test_weighted_routing_rules(services: Lambda) -> None:
    active(services, "w")
    services.versions.publish("w")
    reconfigure(services, "w", Timeout=5)
    services.versions.publish("w")

    def create(version: str, weights: dict[str, float], name: str = "canary") -> dict:
        routing = {"AdditionalVersionWeights": weights}
        return services.aliases.create(
            {
                "FunctionName": "w",
                "Name": name,
                "FunctionVersion": version,
                "RoutingConfig": routing,
            }
        )

    # Weights outside [0.0, 1.0] and keys that are not versions are ValidationExceptions.
    for weights, message in [({"2": 1.5}, "Map value must"), ({"$LATEST": 0.5}, "Map keys must")]:
        with pytest.raises(ValidationError, match=message):
            create("1", weights)
    for version, weights, message in [
        ("1", {"1": 0.5}, "already included"),
        ("$LATEST", {"1": 0.5}, r"\$LATEST is not supported"),
        ("1", {"2": 0.1, "3": 0.1}, "cannot be greater than 1"),
    ]:
        with pytest.raises(InvalidParameterValue, match=message):
            create(version, weights)
    with pytest.raises(ResourceNotFound):
        create("1", {"5": 0.5})
    alias = create("1", {"2": 0.25})
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.25}}
    assert services.aliases.routing("w", "canary")[:2] == ("1", {"2": 0.25})
    picked = {services.aliases.resolve("w", "canary")[0] for _ in range(200)}
    assert picked == {"1", "2"}


def test_alias_update_checks_the_revision(services: Lambda) -> None:
    active(services, "up")
    services.versions.publish("up")
    alias = services.aliases.create({"FunctionName": "up", "Name": "a", "FunctionVersion": "1"})
    moved = services.aliases.update(
        {"FunctionName": "up", "Name": "a", "FunctionVersion": "$LATEST"}
    )
    assert moved["FunctionVersion"] == "$LATEST" and moved["RevisionId"] != alias["RevisionId"]
    with pytest.raises(PreconditionFailed):
        services.aliases.update(
            {
                "FunctionName": "up",
                "Name": "a",
                "Description": "x",
                "RevisionId": alias["RevisionId"],
            }
        )


def test_a_version_an_alias_uses_cannot_be_deleted(services: Lambda) -> None:
    active(services, "keep")
    services.versions.publish("keep")
    reconfigure(services, "keep", Timeout=4)
    services.versions.publish("keep")
    services.aliases.create({"FunctionName": "keep", "Name": "main", "FunctionVersion": "1"})
    services.aliases.create(
        {
            "FunctionName": "keep",
            "Name": "canary",
            "FunctionVersion": "$LATEST",
        }
    )
    services.aliases.update(
        {"FunctionName": "keep", "Name": "canary", "FunctionVersion": "1",
         "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5}}}
    )  # fmt: skip
    with pytest.raises(ResourceConflict, match=r"\['canary', 'main'\]"):
        services.versions.delete("keep", "1")
    with pytest.raises(ResourceConflict, match=r"\['canary'\]"):
        services.versions.delete("keep", "2")  # a weight is a use too
    services.aliases.delete("keep", "canary")
    services.versions.delete("keep", "2")
    with pytest.raises(ResourceNotFound):
        services.functions.get("keep", "2")
    assert services.functions.get("keep", "1").config["Version"] == "1"
