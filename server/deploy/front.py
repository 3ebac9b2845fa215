"""The coordinator's public port: TLS, and Flower's Fleet API only.

Flower 1.42's SuperLink serves its Control API (``flwr ls / run / supernode register``),
Fleet API (SuperNodes) and Runtime API (SuperExec) on one port, and the open-source build
authenticates nobody on Control and Runtime (/work/shared/FLOWER_NOTES.md, "Security of a
deployment"). ``fedmi-server start`` therefore runs the SuperLink on a loopback port and
puts this front on the port the sites are given: an ASGI app served by uvicorn with the
federation's server certificate, which forwards the Fleet calls a SuperNode makes
(:data:`FLEET_ROUTES`, POST only) to the SuperLink and answers every other request 404
without forwarding it. The operator reaches Control on the coordinator host through
``fedmi-server`` (loopback), remote operators through an SSH tunnel.

Run as ``python -m fedmi.server.deploy.front --listen HOST:PORT --upstream PORT --certs DIR``.
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import httpx

#: the Fleet API calls a SuperNode makes (flwr/supernode/fleet_http_client.py), all POST
FLEET_ROUTES = frozenset(
    f"/v1/fleet/{name}"
    for name in (
        "register-node",
        "activate-node",
        "deactivate-node",
        "unregister-node",
        "send-node-heartbeat",
        "pull-messages",
        "push-messages",
        "get-run",
        "get-fab",
        "push-object",
        "pull-object",
        "confirm-message-received",
    )
)
#: hop-by-hop headers (RFC 9110 §7.6.1) and those the proxy sets itself
_DROP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
    | {"proxy-authorization", "proxy-authenticate", "content-length"}
)


def route_allowed(method: str, path: str, raw_path: bytes | None = None) -> bool:
    """Whether a request may pass to the SuperLink: a Fleet call, POST, no tricks.

    ``raw_path`` (the path as sent, before percent-decoding) must equal ``path``: an
    encoded ``%2F`` or ``..`` that decodes into a Fleet path is refused.
    """
    if method != "POST" or path not in FLEET_ROUTES:
        return False
    return raw_path is None or raw_path == path.encode("ascii")


def upstream_context(ca_cert: Path) -> ssl.SSLContext:
    """TLS to the loopback SuperLink: its certificate must chain to the federation's CA."""
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    ctx.check_hostname = False  # loopback; the CA chain is still verified
    return ctx


class FleetFront:
    """ASGI app: forwards :data:`FLEET_ROUTES` to ``upstream``, 404 for everything else."""

    def __init__(self, upstream: str, verify: ssl.SSLContext | bool) -> None:
        self.upstream = upstream.rstrip("/")
        self.verify = verify
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.upstream, verify=self.verify, timeout=httpx.Timeout(300.0)
            )
        return self._client

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if not route_allowed(method, path, scope.get("raw_path")) or scope.get("query_string"):
            await _answer(send, 404, b"not found\n")
            return
        body = bytearray()
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _DROP
        ]
        try:
            resp = await self.client().post(path, content=bytes(body), headers=headers)
        except httpx.HTTPError:
            await _answer(send, 502, b"the coordinator's SuperLink is not reachable\n")
            return
        out = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.items()
            if k.lower() not in _DROP and k.lower() != "content-encoding"
        ]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    async def _lifespan(self, receive, send) -> None:  # noqa: ANN001 - ASGI
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send, status: int, body: bytes) -> None:  # noqa: ANN001 - ASGI
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description="fedmi's Fleet-only front of the SuperLink")
    ap.add_argument("--listen", required=True, help="HOST:PORT the sites connect to")
    ap.add_argument("--upstream", type=int, required=True, help="the SuperLink's loopback port")
    ap.add_argument("--certs", type=Path, required=True, help="folder of `fedmi-server certs`")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    certs = args.certs.resolve()
    app = FleetFront(f"https://127.0.0.1:{args.upstream}", upstream_context(certs / "ca.crt"))
    uvicorn.run(
        app,
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=str(certs / "server.pem"),
        ssl_keyfile=str(certs / "server.key"),
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
