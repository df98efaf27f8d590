"""Event source mappings: not built yet (their own issue). Until then every mapping is one
that does not exist, answered as AWS answers an unknown UUID."""

from __future__ import annotations

from typing import Any

from lambdahost.errors import ResourceNotFound


class EventSourceMappings:
    def get(self, uuid: str) -> dict[str, Any]:
        # Recorded AWS answer (localstack test_lambda_api.snapshot.json,
        # test_event_source_mapping_exceptions: get_unknown_uuid).
        raise ResourceNotFound("The resource you requested does not exist.")
