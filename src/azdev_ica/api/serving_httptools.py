"""`ica serve`'s HTTP protocol when httptools is installed (api/serving.py chooses): uvicorn's
httptools protocol with the same read deadline and header limit as the h11 one."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from azdev_ica.api.serving import MAX_HEADER_BYTES, ReadDeadline


class DeadlineHttpToolsProtocol(ReadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, a C parser, in place of the pure-Python h11) with
    the read deadline of api/serving.py, and a request line plus headers still incomplete
    after MAX_HEADER_BYTES refused as h11 refuses them (400, connection closed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes: int | None = None  # counted from a request's first byte

    def data_received(self, data: bytes) -> None:
        counting = self._header_bytes is not None
        if counting:
            self._header_bytes = (self._header_bytes or 0) + len(data)
        super().data_received(data)  # the read deadline's, then the parser's
        if not counting and self._header_bytes is not None:
            self._header_bytes += len(data)  # a request began in this chunk
        # Still in a request's head after this much: refused, as h11 refuses it.
        if self._header_bytes is not None and self._header_bytes > MAX_HEADER_BYTES:
            self._header_bytes = None
            if not self.transport.is_closing():
                self.send_400_response("Request headers too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._read_deadline is None:
            self._arm_read_deadline()  # a pipelined request begins

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_read_deadline()  # the whole request is in
