"""A round-robin HTTP proxy for the replica tests: every request (not every
connection) goes to the next of several Wharf replicas, so a client's POST,
PATCH and PUT of one upload land on different replicas.

    python rr_proxy.py PORT LOGFILE http://127.0.0.1:A http://127.0.0.1:B ...

Bodies stream both ways; the client's Host header is passed on, so the
replicas' Location headers point back at the proxy. LOGFILE gets one line
per request: "<replica index> <method> <path>". A replica that refuses the
connection is skipped (the next one is tried), as a load balancer would.
"""

import asyncio
import itertools
import sys

import aiohttp
from aiohttp import web

HOP = {
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def main():
    port = int(sys.argv[1])
    log = open(sys.argv[2], "a", buffering=1)
    backends = sys.argv[3:]
    turn = itertools.cycle(range(len(backends)))
    session = None

    async def handle(req: web.Request) -> web.StreamResponse:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
            )
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP}
        body = req.content if req.body_exists else None
        last_error = None
        # Retry on another replica only when the request never reached one
        # (connection refused): a body, once read, cannot be sent again.
        for _ in range(len(backends)):
            i = next(turn)
            try:
                upstream = await session.request(
                    req.method,
                    backends[i] + req.rel_url.raw_path_qs,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
                )
            except aiohttp.ClientConnectorError as e:
                last_error = e
                continue
            log.write(f"{i} {req.method} {req.rel_url.raw_path}\n")
            async with upstream:
                out_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP
                }
                resp = web.StreamResponse(status=upstream.status, headers=out_headers)
                await resp.prepare(req)
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        return web.Response(status=502, text=f"no replica answered: {last_error}\n")

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
