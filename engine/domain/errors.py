"""Domain errors: every rejection carries a stable code (the HTTP contract's error codes).

The HTTP layer maps ``code`` to a status; nothing in the domain knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command was refused. Nothing is recorded when one is raised."""

    code = "invalid"
    status = 422

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class ValidationFailed(DomainError):
    code = "validation_error"

    def __init__(self, message: str, **details: Any) -> None:
        # The contract promises `details` on every validation_error.
        if "details" not in details:
            details["details"] = [{"field": str(details.get("field", "")), "message": message}]
        super().__init__(message, **details)


class ExitCriteriaUnmet(DomainError):
    code = "exit_criteria_unmet"

    def __init__(self, message: str, unmet: list[dict[str, str]]) -> None:
        super().__init__(message, unmet=unmet)
        self.unmet = unmet


class InvalidTransition(DomainError):
    code = "invalid_transition"


class DealClosed(DomainError):
    code = "deal_closed"


class DealExists(DomainError):
    code = "deal_exists"
    status = 409


class VersionConflict(DomainError):
    code = "version_conflict"
    status = 409

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message, current_version=current_version)
        self.current_version = current_version


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 409


class PipelineInUse(DomainError):
    code = "pipeline_in_use"
    status = 409


class NotFound(DomainError):
    code = "not_found"
    status = 404
