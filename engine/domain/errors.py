"""Domain errors: every refusal carries a stable ``code`` (the contract's error code) and its
``details``, nothing else.

Which HTTP status each error answers with is the API's business (``engine.api.errors.STATUS``);
other callers (the CLI, the importer, the workflows) go by the class or the code.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command was refused. Nothing is recorded when one is raised."""

    code = "invalid"

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


class VersionConflict(DomainError):
    code = "version_conflict"

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message, current_version=current_version)
        self.current_version = current_version


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class PipelineInUse(DomainError):
    code = "pipeline_in_use"


class NotFound(DomainError):
    code = "not_found"
