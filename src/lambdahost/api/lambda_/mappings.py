"""Event source mappings."""

from __future__ import annotations

from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.mappings import EventSourceMappings


class MappingHandlers:
    def __init__(self, mappings: EventSourceMappings) -> None:
        self.mappings = mappings

    @operation("GetEventSourceMapping")
    async def get_event_source_mapping(self, call: Call) -> Output:
        return self.mappings.get(call.params["UUID"])
