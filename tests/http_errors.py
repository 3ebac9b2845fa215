"""HTTP errors as Flower's HTTP clients raise them (for tests of fedmi's retry policies)."""

from __future__ import annotations

import httpx


def http_status_error(
    code: int, path: str = "/v1/runtime/pull-task-input"
) -> httpx.HTTPStatusError:
    """An ``httpx.HTTPStatusError`` with status ``code`` for a POST to ``path``."""
    request = httpx.Request("POST", f"http://127.0.0.1:9{path}")
    return httpx.HTTPStatusError(
        str(code), request=request, response=httpx.Response(code, request=request)
    )
