"""Maps pydantic domain events to eventsourcing's stored events and back, with upcasting.

Stored state is the event's JSON (orjson); ``class_version`` is written only when it is above 1.
An event class that changes shape bumps ``class_version`` and gains static methods
``upcast_v1_v2(state: dict) -> None`` (and so on) that bring an old record up to date.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

_ENVELOPE = {"originator_id", "originator_version"}


class PydanticMapper(Mapper):  # type: ignore[type-arg]
    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        model = cast(BaseModel, domain_event)
        state = model.model_dump(mode="json", exclude=_ENVELOPE)
        class_version = getattr(type(model), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        stored_state = orjson.dumps(state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(
            originator_id=model.originator_id,  # type: ignore[attr-defined]
            originator_version=model.originator_version,  # type: ignore[attr-defined]
            topic=get_topic(type(model)),
            state=stored_state,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return decode_event(
            stored_event.topic,
            stored_event.state,
            stored_event.originator_id,
            stored_event.originator_version,
            self,
        )


def decode_event(
    topic: str,
    state: bytes,
    originator_id: Any,
    originator_version: int,
    mapper: Mapper | None = None,
) -> Any:  # type: ignore[type-arg]
    """Rebuild a domain event from a stored record (also used by readers outside the application)."""
    stored_state = state
    if mapper is not None:
        if mapper.cipher:
            stored_state = mapper.cipher.decrypt(stored_state)
        if mapper.compressor:
            stored_state = mapper.compressor.decompress(stored_state)
    event_state: dict[str, Any] = orjson.loads(stored_state)
    cls = resolve_topic(topic)
    from_version = event_state.pop("class_version", 1)
    class_version = getattr(cls, "class_version", 1)
    while from_version < class_version:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
        from_version += 1
    event_state["originator_id"] = originator_id
    event_state["originator_version"] = originator_version
    return cls.model_validate(event_state)
