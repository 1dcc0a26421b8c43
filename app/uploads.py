"""Request bodies within the upload limit, and the file of a multipart/form-data request read into memory.

Starlette's form parser would spool a file over 1 MiB to a temporary file, and an X-ray must never reach
the disk; it would also read the whole body before its size is known. Here the body is parsed as it
arrives, only the named file part is kept (in memory), and reading stops with `UploadTooLarge` as soon
as the body passes the limit, whatever length the client declared; `DeclaredSizeLimit` refuses a body
declared too large before anything reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from radialog.app.service import UploadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # defined for type checkers only

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and small fields around the file


class DeclaredSizeLimit:
    """ASGI middleware: a request whose Content-Length is over any upload's is answered 413, unread.

    Plain ASGI, not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware hides a client's disconnect
    from a streaming response, which then holds the model until the garbage collector closes it.
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = Headers(scope=scope).get("content-length", "")
            if length.isdigit() and int(length) > self.max_upload_bytes + MULTIPART_OVERHEAD:
                response = JSONResponse({"detail": str(UploadTooLarge(self.max_upload_bytes))}, status_code=413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_file_field(request: Request, name: str, max_bytes: int) -> bytes:
    """The bytes of the form's file field `name` (its first, if several), from a body at most
    `MULTIPART_OVERHEAD` larger than `max_bytes`; the file itself is held to `max_bytes` by the service."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise HTTPException(422, f"expected a multipart/form-data body with a `{name}` file")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "invalid multipart data: no boundary")
    part = _FilePart(name.encode())
    parser = MultipartParser(boundary, part.callbacks())
    limit, received = max_bytes + MULTIPART_OVERHEAD, 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise UploadTooLarge(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as err:
        raise HTTPException(400, "invalid multipart data") from err
    if part.data is None:
        raise HTTPException(422, f"the form has no `{name}` file")
    return bytes(part.data)


class _FilePart:
    """Parser callbacks that keep the data of the first file part named `name` and skip the others."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.data: bytearray | None = None
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._current: bytearray | None = None  # the part being read, when it is the one kept

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        # A file part has a filename; a plain field of the same name is not an upload.
        if self.data is None and options.get(b"name") == self.name and b"filename" in options:
            self.data = self._current = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:  # other fields count against the body limit, but are not kept
            self._current += data[start:end]

    def _part_end(self) -> None:
        self._current = None
