"""The AWS query protocol as the sandbox speaks it: reading form requests, writing XML answers and error bodies."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

AUTOSCALING_XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)/aws4_request")
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")


@dataclass(frozen=True)
class QueryRequest:
    """One AWS API call as it arrived: service and region from the SigV4 scope, action and params from the body."""

    service: str | None
    region: str | None
    action: str | None
    params: dict[str, str]

    def member_list(self, name: str) -> list[str]:
        """Values of a query-protocol list parameter (`Name.member.1`, `Name.member.2`, ...) in order."""
        prefix = f"{name}.member."
        indexed = [(int(k[len(prefix) :]), v) for k, v in self.params.items() if k.startswith(prefix)]
        return [v for _, v in sorted(indexed)]


class AwsApiError(Exception):
    """An error the sandbox answers with, in AWS's own shape (code, message, HTTP status, fault type)."""

    def __init__(self, code: str, message: str, http_status: int = 400, fault_type: str = "Sender") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.fault_type = fault_type


def parse_request(authorization: str | None, content_type: str | None, body: bytes) -> QueryRequest:
    service = region = None
    if authorization and (scope := _CREDENTIAL_SCOPE.search(authorization)):
        service, region = scope.group("service"), scope.group("region")
    params: dict[str, str] = {}
    if content_type and content_type.startswith("application/x-www-form-urlencoded") and body:
        params = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    action = params.pop("Action", None)
    params.pop("Version", None)
    return QueryRequest(service=service, region=region, action=action, params=params)


def new_request_id() -> str:
    return str(uuid.uuid4())


def error_body(service: str | None, error: AwsApiError, request_id: str) -> bytes:
    """The error document botocore parses: EC2's `<Response><Errors>` form, else the query `<ErrorResponse>`."""
    code, message = escape(error.code), escape(error.message)
    if service == "ec2":
        return (
            f"<?xml version='1.0' encoding='UTF-8'?>\n<Response><Errors><Error><Code>{code}</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
    return (
        f'<ErrorResponse xmlns="{AUTOSCALING_XMLNS}"><Error><Type>{escape(error.fault_type)}</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()


def error_code_in(body: bytes) -> str | None:
    """The `<Code>` of an AWS XML error body, if the body is one."""
    match = _ERROR_CODE.search(body)
    return match.group(1).decode("utf-8", errors="replace") if match else None


def element(name: str, value: object) -> str:
    """`<name>value</name>` with the value XML-escaped; None gives nothing."""
    if value is None:
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"


def elements(fields: Mapping[str, object]) -> str:
    return "".join(element(k, v) for k, v in fields.items())


def autoscaling_response(action: str, result_xml: str | None, request_id: str) -> bytes:
    """A successful query-protocol answer; `result_xml` None means the action has no result element."""
    result = f"<{action}Result>{result_xml}</{action}Result>" if result_xml is not None else ""
    return (
        f'<{action}Response xmlns="{AUTOSCALING_XMLNS}">{result}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()
