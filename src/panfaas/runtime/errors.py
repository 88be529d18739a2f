"""The API's errors and OpenWhisk's messages for them (http/ErrorResponse.scala `Messages`).

The REST API answers every error with OpenWhisk's body `{"error": <message>, "code": <id>}`.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


NOT_FOUND = "The requested resource does not exist."
CONFLICT = "resource already exists"
WRONG_COLLECTION = "Resource by this name exists but is not in this collection."
NOT_AUTHORIZED = "The supplied authentication is not authorized to access this resource."
AUTH_INVALID = "The supplied authentication is invalid."
AUTH_MISSING = "The resource requires authentication, which was not supplied with the request."
ILLEGAL_NAME = "The name of the entity contains illegal characters."
ILLEGAL_ACTIVATION_ID = "The activation id is not valid."
PARAMETERS_NOT_ALLOWED = "Request defines parameters that are not allowed (e.g., reserved properties)."
DOCS_WITH_COUNT = "The parameter 'docs' is not permitted with 'count'."
SEQUENCE_TOO_LONG = "Too many actions in the sequence."
SEQUENCE_EMPTY = "No component specified for the sequence."
SEQUENCE_CYCLIC = "Sequence may not refer to itself."
SEQUENCE_COMPONENT_MISSING = "Sequence component does not exist."
BINDING_MISSING = "Binding references a package that does not exist."
PACKAGE_CANNOT_BECOME_BINDING = "Resource is a package and cannot be converted into a binding."
BINDING_OF_BINDING = "Cannot bind to another package binding."
NOT_ALLOWED_ON_BINDING = "Operation not permitted on package binding."
RULE_NEEDS_TRIGGER_AND_ACTION = "rule requires a valid trigger and a valid action"
RULE_TRIGGER_MISSING = "Only rules with existing triggers can be activated"
FEED_NAME_INVALID = "Feed name is not valid"
EXEC_UNDEFINED = "exec undefined"


def not_found() -> ApiError:
    return ApiError(404, NOT_FOUND)


def malformed(detail: str) -> ApiError:
    return ApiError(400, f"The request content was malformed:\n{detail}")


def timeout_invalid(max_ms: int) -> ApiError:
    return ApiError(400, f"Timeout must be number of milliseconds up to {max_ms}.")


def limit_out_of_range(collection: str, value: int, maximum: int) -> ApiError:
    return ApiError(400, f"The value '{value}' is not in the range of 0 to {maximum} for {collection}.")


def skip_out_of_range(collection: str, value: int) -> ApiError:
    return ApiError(400, f"The value '{value}' is not greater than or equal to 0 for {collection}.")


def not_an_integer(collection: str, value: str) -> ApiError:
    return ApiError(400, f"The value '{value}' is not an integer for {collection}.")


def bad_epoch(value: str) -> ApiError:
    return ApiError(400, f"Parameter is not a valid value for epoch seconds: {value}")


def too_big(field: str, size: int, allowed: int) -> ApiError:
    return ApiError(413, f"{field} larger than allowed: {size} > {allowed} bytes.")


def package_not_empty(n: int) -> ApiError:
    return ApiError(409, f"Package not empty (contains {n} {'entity' if n == 1 else 'entities'})")


def package_name_reserved(name: str) -> ApiError:
    return ApiError(400, f"Package name '{name}' is reserved.")
