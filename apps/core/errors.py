"""Domain errors: what services and selectors raise. No HTTP framework here.

An :class:`ApplicationError` carries a user-facing message (already translated), a stable machine
code, the status the API answers with, and extra fields for the error envelope. The DRF exception
handler (`apps.core.api.exceptions`) and the plain-Django error paths map every one of them to the
same envelope `{"statusCode", "message", "error", …extra}`; :class:`InvalidInput` adds `details`
exactly as a serializer's validation error does. This is Zulip's `JsonableError` shape: the service
says what went wrong, the edge decides how it is written.

    >>> err = NotFound("Prompt ID=9 does not exist")
    >>> (err.status_code, err.code, err.message)
    (404, 'not_found', 'Prompt ID=9 does not exist')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class ApplicationError(Exception):
    """A domain error with an exact, user-facing message (e.g. `400 无权使用此提示词`).

    `extra` keys are merged into the envelope (e.g. `inputCost` on a 402); `headers` are set
    on the answer (e.g. `Retry-After`).
    """

    status_code: int = 400
    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = str(message)
        if status_code is not None:
            self.status_code = status_code
        self.code = code or self.default_code
        self.extra: dict[str, Any] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.code!r}, {self.message!r})"


class NotFound(ApplicationError):
    """The thing asked for does not exist for this user (404): absent and not-yours look the same."""

    status_code = 404
    default_code = "not_found"


class PermissionDenied(ApplicationError):
    status_code = 403
    default_code = "permission_denied"


class Conflict(ApplicationError):
    status_code = 409
    default_code = "conflict"


class InvalidInput(ApplicationError):
    """Field-level validation failures found by a service (400 with `details`, as a serializer's).

    `errors` maps a field path (`"entries.3.key"`, or `"nonFieldErrors"`) to its messages; nested
    mappings and lists are accepted and flattened by the envelope the same way as DRF's details.
    """

    default_code = "invalid"

    def __init__(self, errors: Mapping[str, Any] | Sequence[str] | str, *, code: str | None = None) -> None:
        if isinstance(errors, str):
            errors = [errors]
        self.errors: Mapping[str, Any] | Sequence[str] = errors
        first = _first_message(errors)
        super().__init__(first, code=code)


def _first_message(errors: Any) -> str:
    if isinstance(errors, Mapping):
        for value in errors.values():
            return _first_message(value)
        return ""
    if isinstance(errors, list | tuple):
        for value in errors:
            return _first_message(value)
        return ""
    return str(errors)


class InsufficientBalance(ApplicationError):
    """402: not even the call's input cost and one output character fit in what the user can spend
    (`required`); `held` is what the user's running calls keep reserved (it comes back when they end)."""

    status_code = 402
    default_code = "insufficient_balance"

    def __init__(self, message: str, *, required: int, available: int, input_cost: int, held: int) -> None:
        self.required = required
        self.available = available
        self.input_cost = input_cost
        self.held = held
        super().__init__(
            message,
            extra={"required": required, "available": available, "inputCost": input_cost, "heldByRunning": held},
        )


class ContextExceeded(ApplicationError):
    """400: the prompt does not fit in the model's context, even after the budget dropped what it may."""

    default_code = "context_length_exceeded"

    def __init__(self, message: str, *, needed: int, budget: int, extra: Mapping[str, Any] | None = None) -> None:
        self.needed = needed
        self.budget = budget
        super().__init__(message, extra=extra)


class MaxTokensTooLarge(ApplicationError):
    """400: `maxTokens` is above what the model can write in one answer."""

    default_code = "max_tokens_too_large"

    def __init__(self, message: str, *, limit: int, model: str, extra: Mapping[str, Any] | None = None) -> None:
        self.limit = limit
        self.model = model
        super().__init__(message, extra=extra)


class ServiceUnavailable(ApplicationError):
    """503: a dependency is busy or down; `Retry-After` says when to try again."""

    status_code = 503
    default_code = "unavailable"
