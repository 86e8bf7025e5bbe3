"""Fault injection and latency for the emulator: control endpoints and WSGI middleware.

`Middleware` wraps moto's WSGI app. It serves the control endpoints under
`/_emulator/` itself and, for every other request, works out the AWS service
and action, sleeps for any configured latency, and answers with a pending
injected fault, serialized in that service's own protocol, instead of calling
moto. See README.md for the endpoints.

Service: the SigV4 credential scope (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`,
from the Authorization header or a presigned URL's X-Amz-Credential).
Action: `X-Amz-Target` (JSON protocols), the `Action` query or form parameter
(query and EC2 protocols), else the method and path matched against the
service's botocore model (REST protocols: EBS, S3, Lambda).
The protocol comes from the same botocore model.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import botocore.session
from botocore.exceptions import UnknownServiceError

CONTROL_PREFIX = "/_emulator/"
_CREDENTIAL = re.compile(r"Credential=[^/,\s]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_session = botocore.session.get_session()


@dataclass
class Fault:
    """The next `count` calls of `service` (and `action`, or any action if None) fail."""

    service: str
    action: str | None = None
    count: int = 1
    status: int = 400
    code: str = "ThrottlingException"
    message: str = "Rate exceeded (fault injected by the emulator)"
    reason: str | None = None  # EBS errors carry a "Reason"
    corrupt: bool = False  # instead of an error: the real answer with one byte flipped
    # Only requests whose path matches (re.search), e.g. "/blocks/[1-9][0-9]*$"
    # to fail every EBS block but block 0.
    path_regex: str | None = None

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> Fault:
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown or not isinstance(spec.get("service"), str):
            raise ValueError(f"a fault needs 'service'; unknown fields: {sorted(unknown)}")
        fault = cls(**spec)
        if fault.count < 1 or not 400 <= fault.status <= 599:
            raise ValueError("count must be >= 1 and status 400..599")
        if fault.path_regex is not None:
            re.compile(fault.path_regex)  # a bad pattern is the caller's error, now
        return fault

    def matches(self, service: str, action: str | None, path: str = "") -> bool:
        return (
            self.service == service
            and self.action in (None, action)
            and (self.path_regex is None or re.search(self.path_regex, path) is not None)
        )

    def label(self) -> str:
        return f"{self.service}:{self.action or '*'}:{'corrupt' if self.corrupt else self.code}"


class Controls:
    """Pending faults, served-fault counts and latencies; shared by all request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.served: dict[str, int] = {}
        self.latency_ms: dict[tuple[str, str | None], float] = {}

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def take_fault(self, service: str, action: str | None, path: str = "") -> Fault | None:
        """Consumes one use of the first pending fault matching the call."""
        with self._lock:
            for fault in self.faults:
                if fault.matches(service, action, path):
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    self.served[fault.label()] = self.served.get(fault.label(), 0) + 1
                    return fault
        return None

    def set_latency(self, service: str, action: str | None, ms: float) -> None:
        with self._lock:
            if ms > 0:
                self.latency_ms[(service, action)] = ms
            else:
                self.latency_ms.pop((service, action), None)

    def latency_for(self, service: str, action: str | None) -> float:
        with self._lock:
            return self.latency_ms.get((service, action), self.latency_ms.get((service, None), 0))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pending": [asdict(f) for f in self.faults],
                "served": dict(self.served),
                "latency": [
                    {"service": s, "action": a, "ms": ms} for (s, a), ms in self.latency_ms.items()
                ],
            }

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
            self.served.clear()

    def clear_latency(self) -> None:
        with self._lock:
            self.latency_ms.clear()


@functools.cache
def service_model(service: str) -> Any:
    try:
        return _session.get_service_model(service)
    except UnknownServiceError:
        return None


@functools.cache
def _rest_routes(service: str) -> list[tuple[str, re.Pattern, list[list[str]], int, str]]:
    """(method, path regex, required query keys/values, literal length, operation) per operation."""
    model = service_model(service)
    routes = []
    for name in model.operation_names if model else []:
        http = model.operation_model(name).http
        path, _, query = http["requestUri"].partition("?")
        parts = re.split(r"(\{[^}]+\})", path)
        regex = "".join(
            (".+" if p.endswith("+}") else "[^/]+") if p.startswith("{") else re.escape(p)
            for p in parts
        )
        literal = sum(len(p) for p in parts if not p.startswith("{"))
        required = [q.split("=", 1) for q in query.split("&") if q]
        routes.append((http["method"], re.compile(regex + "/?"), required, literal, name))
    return routes


def _rest_action(service: str, method: str, path: str, query: dict[str, list[str]]) -> str | None:
    best, best_score = None, (-1, -1)
    for route_method, regex, required, literal, name in _rest_routes(service):
        if route_method != method or not regex.fullmatch(path):
            continue
        if not all(r[0] in query and (len(r) == 1 or r[1] in query[r[0]]) for r in required):
            continue
        if (len(required), literal) > best_score:
            best, best_score = name, (len(required), literal)
    return best


def identify(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """(service, action) of an AWS request; reads a form body without consuming it."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    presigned = query.get("X-Amz-Credential", [""])[0]
    scope = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", "") or f"Credential={presigned}")
    if not scope:
        return None, None
    service = scope.group(1).lower()
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return service, target.rsplit(".", 1)[-1]
    if "Action" in query:
        return service, query["Action"][0]
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return service, action[0]
    path = environ.get("PATH_INFO", "")
    return service, _rest_action(service, environ.get("REQUEST_METHOD", "GET"), path, query)


def render_error(service: str, fault: Fault) -> tuple[int, dict[str, str], bytes]:
    """An error response for `fault` in the wire protocol of `service`."""
    model = service_model(service)
    protocol = model.protocol if model else "rest-json"
    request_id = str(uuid.uuid4())
    code, message = fault.code, fault.message
    headers = {"x-amzn-RequestId": request_id}
    if protocol == "rest-json":
        body = {"Message": message}
        if fault.reason:
            body["Reason"] = fault.reason
        headers.update({"Content-Type": "application/json", "X-Amzn-ErrorType": code})
        return fault.status, headers, json.dumps(body).encode()
    if protocol == "json":
        version = model.metadata.get("jsonVersion", "1.0")
        headers["Content-Type"] = f"application/x-amz-json-{version}"
        if "awsQueryCompatible" in model.metadata:
            fault_side = "Sender" if fault.status < 500 else "Receiver"
            headers["x-amzn-query-error"] = f"{code};{fault_side}"
        return fault.status, headers, json.dumps({"__type": code, "message": message}).encode()
    code_x, message_x = escape(code), escape(message)
    headers["Content-Type"] = "text/xml"
    if protocol == "ec2":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code_x}</Code><Message>{message_x}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
    elif protocol == "rest-xml":
        headers["Content-Type"] = "application/xml"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code_x}</Code>'
            f"<Message>{message_x}</Message><RequestId>{request_id}</RequestId></Error>"
        )
    else:  # query
        fault_side = "Sender" if fault.status < 500 else "Receiver"
        body = (
            f"<ErrorResponse><Error><Type>{fault_side}</Type><Code>{code_x}</Code>"
            f"<Message>{message_x}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    return fault.status, headers, body.encode()


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


class Middleware:
    """WSGI middleware: control endpoints, latency and faults in front of moto."""

    def __init__(self, app: Any, controls: Controls | None = None) -> None:
        self.app = app
        self.controls = controls or Controls()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return self._control(environ, start_response)
        service, action = identify(environ)
        if service is None:
            return self.app(environ, start_response)
        delay_ms = self.controls.latency_for(service, action)
        if delay_ms:
            time.sleep(delay_ms / 1000)
        fault = self.controls.take_fault(service, action, environ.get("PATH_INFO", ""))
        if fault is None:
            return self.app(environ, start_response)
        if fault.corrupt:
            return self._corrupted(environ, start_response)
        status, headers, body = render_error(service, fault)
        headers["Content-Length"] = str(len(body))
        start_response(_status_line(status), list(headers.items()))
        return [body]

    def _corrupted(self, environ: dict[str, Any], start_response: Any) -> Any:
        """moto's own answer, headers untouched, with one byte of a 2xx body flipped."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result = self.app(environ, capture)
        try:
            chunks.extend(result)
        finally:
            getattr(result, "close", lambda: None)()
        body = bytearray(b"".join(chunks))
        if body and captured["status"].startswith("2"):
            body[len(body) // 2] ^= 0xFF
        start_response(captured["status"], captured["headers"])
        return [bytes(body)]

    def _control(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "GET")
        resource = environ["PATH_INFO"][len(CONTROL_PREFIX) :].strip("/")
        try:
            payload = self._json_body(environ) if method == "POST" else None
            answer = self._dispatch(method, resource, payload)
            status = 200 if answer is not None else 404
            if answer is None:
                answer = {"error": f"no such control endpoint: {method} {CONTROL_PREFIX}{resource}"}
        except (ValueError, TypeError) as error:
            status, answer = 400, {"error": str(error)}
        body = json.dumps(answer).encode()
        start_response(
            _status_line(status),
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _dispatch(self, method: str, resource: str, payload: Any) -> Any:
        controls = self.controls
        if (method, resource) == ("GET", "health"):
            return {"status": "ok"}
        if resource == "faults":
            if method == "POST":
                for spec in payload if isinstance(payload, list) else [payload]:
                    controls.add_fault(Fault.from_json(spec))
            elif method == "DELETE":
                controls.clear_faults()
            elif method != "GET":
                return None
            state = controls.snapshot()
            return {"pending": state["pending"], "served": state["served"]}
        if resource == "latency":
            if method == "POST":
                if not isinstance(payload.get("service"), str):
                    raise ValueError("latency needs 'service' and 'ms'")
                controls.set_latency(
                    payload["service"], payload.get("action"), float(payload["ms"])
                )
            elif method == "DELETE":
                controls.clear_latency()
            elif method != "GET":
                return None
            return {"latency": controls.snapshot()["latency"]}
        return None

    @staticmethod
    def _json_body(environ: dict[str, Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        payload = json.loads(environ["wsgi.input"].read(length) or b"null")
        if not isinstance(payload, (dict, list)):
            raise ValueError("the body must be a JSON object (or a list of fault objects)")
        return payload
