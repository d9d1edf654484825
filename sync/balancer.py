"""Telling "the balancer sent this to the passive member" from "the primary is down".

Behind a balancer that checks the pair at layer 4 only (a TCP connect, round robin), some
requests reach the passive member, which answers 503 with its own JSON (`not_active` from the
API, `PASSIVE` from the health URL); the balancer's own 503 is an HTML page and a dead primary
answers nothing. A passive answer is asked again on a new connection, so the balancer picks
again, a few times within the request's own timeout, and is not counted as the primary failing.
The passive member also closes the connection it answered on (`Connection: close`), so the
site's kept-alive connection is opened again and the balancer picks a member for it anew.
"""

from __future__ import annotations

import json
import ssl

import httpx

#: how many times a passive member's answer is asked again on a new connection (round robin
#: alternates new connections, but the site's other calls open some in between: 3 once ran out)
RETRIES = 6

NOTE = (
    "the load balancer at this URL sends some requests to the passive member (a TCP-only health"
    " check?); they are asked again on a new connection and answered by the active member"
)


def sent_to_passive(response: httpx.Response) -> bool:
    """A 503 written by a passive member of the pair (the API's or the health URL's)."""
    if response.status_code != 503 or "json" not in response.headers.get("content-type", ""):
        return False
    try:
        body = json.loads(response.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(body, dict) and (body.get("error") == "not_active" or body.get("status") == "PASSIVE")


def fresh_connections(
    timeout: float | httpx.Timeout,
    transport: httpx.BaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Client:
    """A client that opens a new connection for every request (none kept alive)."""
    return httpx.Client(
        timeout=timeout,
        transport=transport,
        verify=verify,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
