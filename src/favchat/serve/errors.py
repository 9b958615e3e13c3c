"""Errors a request can meet, each with its HTTP status, in the OpenAI error shape:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": "video_too_long"}}
"""

from __future__ import annotations

from typing import Any

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         503: "server_error", 500: "server_error"}


class APIError(Exception):
    """A request the server answers with ``status`` and an OpenAI-shaped error body; the message is for the
    client, so it never holds a stack trace."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.code, self.param)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}
