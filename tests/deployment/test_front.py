"""The public port's route filter: only the Fleet calls a SuperNode makes reach the SuperLink."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fedmi.server.deploy.front import FLEET_ROUTES, FleetFront, route_allowed


def test_only_fleet_posts_pass():
    assert len(FLEET_ROUTES) == 12
    for path in FLEET_ROUTES:
        assert route_allowed("POST", path, path.encode())
        assert not route_allowed("GET", path)
    for path in (
        "/v1/control/list-runs",
        "/v1/control/start-run",
        "/v1/control/register-supernode",
        "/v1/runtime/acquire-task",
        "/v1/runtime/v1/acquire-task",
        "/health",
        "/docs",
        "/openapi.json",
        "/v1/fleet/",
        "/v1/fleet/pull-messages/",
        "/v1/fleetx/pull-messages",
    ):
        assert not route_allowed("POST", path), path
    # percent-encoded tricks that decode into a Fleet path are refused
    assert not route_allowed("POST", "/v1/fleet/get-run", b"/v1/fleet%2Fget-run")
    assert not route_allowed("POST", "/v1/fleet/get-run", b"/v1/control/../fleet/get-run")


def _upstream(seen: list):
    async def app(scope, receive, send):
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = dict(scope["headers"])
        seen.append((scope["method"], scope["path"], body, headers))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/protobuf"), (b"x-flwr", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": b"reply:" + body})

    return app


@pytest.mark.parametrize(
    ("method", "path", "forwarded"),
    [
        ("POST", "/v1/fleet/pull-messages", True),
        ("POST", "/v1/control/list-runs", False),
        ("POST", "/v1/control/start-run", False),
        ("POST", "/v1/control/register-supernode", False),
        ("POST", "/v1/runtime/acquire-task", False),
        ("GET", "/v1/fleet/get-run", False),
        ("POST", "/v1/fleet/get-run?x=1", False),
    ],
)
def test_front_forwards_fleet_and_answers_404_otherwise(method, path, forwarded):
    seen: list = []
    front = FleetFront("http://superlink", verify=False)
    front._client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_upstream(seen)), base_url="http://superlink"
    )

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=front), base_url="https://front"
        ) as c:
            return await c.request(
                method, path, content=b"\x08\x01", headers={"x-flwr-signature": "sig"}
            )

    resp = asyncio.run(call())
    if forwarded:
        assert resp.status_code == 200 and resp.content == b"reply:\x08\x01"
        assert resp.headers["x-flwr"] == "1"
        assert len(seen) == 1
        m, p, body, headers = seen[0]
        assert (m, p, body) == ("POST", path, b"\x08\x01")
        assert headers[b"x-flwr-signature"] == b"sig"  # node authentication passes through
    else:
        assert resp.status_code == 404
        assert seen == []  # never reached the SuperLink
