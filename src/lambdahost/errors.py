"""AWS-shaped errors. Raised by any layer; rendered on the wire by `api/`."""

from __future__ import annotations


class LambdaError(Exception):
    """An error the client sees as `x-amzn-ErrorType: <code>` with a JSON message."""

    status: int = 400
    code: str = "InvalidParameterValueException"
    error_type: str | None = "User"  # None: AWS's body has no `Type` member

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, object]:
        typed: dict[str, object] = {"Type": self.error_type} if self.error_type else {}
        return {**typed, "message": self.message, **self.extra}


class InvalidParameterValue(LambdaError):
    code = "InvalidParameterValueException"


class ValidationError(LambdaError):
    code = "ValidationException"


class ResourceNotFound(LambdaError):
    status = 404
    code = "ResourceNotFoundException"


class ResourceConflict(LambdaError):
    status = 409
    code = "ResourceConflictException"


class PreconditionFailed(LambdaError):
    status = 412
    code = "PreconditionFailedException"


class RequestTooLarge(LambdaError):
    status = 413
    code = "RequestTooLargeException"


class InvalidRequestContent(LambdaError):
    code = "InvalidRequestContentException"


class TooManyRequests(LambdaError):
    status = 429
    code = "TooManyRequestsException"


class NotImplementedOperation(LambdaError):
    status = 501
    code = "NotImplementedException"
    error_type = "Server"


class ServiceError(LambdaError):
    status = 500
    code = "ServiceException"
    error_type = "Server"


class AccessDenied(LambdaError):
    status = 403
    code = "AccessDeniedException"
