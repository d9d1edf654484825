"""The ceiling for `primary_login.py`: a bare FastAPI app on the same server stack as the primary
(`siteserver.serving.serve`: uvicorn, one process, httptools/uvloop as uvicorn picks them, the same
GC tuning, access log off) with one POST route that parses a small JSON body into a pydantic model
and answers a small JSON object.

It listens on the card-login path, so the same wrk script drives both servers, and on the copy
usage path (`/api/device/v1/sessions/{session}/usage`, for bench/wan_outage.py and bench/usage.lua).

    python bench/bare_app.py --port 8000
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="bare")


class LoginIn(BaseModel):
    card_number: str


@app.post("/api/device/v1/login")
async def login(body: LoginIn) -> dict[str, object]:
    return {"username": body.card_number, "balance_cents": 0, "mode": "online"}


class UsageIn(BaseModel):
    txn_id: uuid.UUID
    kind: str
    pages: int
    color: bool


@app.post("/api/device/v1/sessions/{session_id}/usage")
async def usage(session_id: str, body: UsageIn) -> dict[str, object]:
    """The ceiling for copy charging (bench/wan_outage.py): parse the same body, answer a small object."""
    return {
        "txn_id": str(body.txn_id),
        "status": "charged",
        "cost_cents": 5,
        "balance_cents": 0,
        "mode": "online",
    }


if __name__ == "__main__":
    import argparse

    from siteserver.config import Http
    from siteserver.serving import serve

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    serve(app, host="127.0.0.1", port=args.port, access_log=False, http=Http())
