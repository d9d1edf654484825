"""The primary's side of a site's reconciliation report: what its ledger received from that site
in a window, conflicts included (for when the branch machine is gone). Streamed, a page at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator

from siteserver.domain.offline import spender
from siteserver.store import Database, ledger
from siteserver.timeutil import now_iso

from .totals import Totals

PAGE = 2000


def received(db: Database, site_id: str, since: str, until: str) -> Iterator[bytes]:
    """contract.PrimaryReportOut as JSON, written as the ledger is read."""
    head = {"site_id": site_id, "since": since, "until": until, "generated_at": now_iso()}
    yield json.dumps(head)[:-1].encode() + b',"entries":['
    totals = Totals()
    conflicts: list[dict[str, str]] = []
    after = 0
    first = True

    def page_after(after: int) -> list[ledger.Application]:
        return db.read_sync(
            lambda conn: ledger.applications_from(
                conn, site_id, since=since, until=until, after_seq=after, limit=PAGE
            )
        )

    while True:
        page = page_after(after)
        if not page:
            break
        after = page[-1].seq
        texts = []
        for a in page:
            conflict = None if a.conflict is None else {"kind": a.conflict.kind, "action": a.conflict.action}
            if conflict is not None:
                conflicts.append({"txn_id": a.txn_id, **conflict})
            totals.add(
                user=spender(a.flags, a.named_account),
                account=a.account,
                printer=None,
                kind=a.kind,
                cents=a.amount_cents,
            )
            texts.append(
                json.dumps(
                    {
                        "txn_id": a.txn_id,
                        "seq": a.seq,
                        "occurred_at": a.occurred_at,
                        "applied_at": a.applied_at,
                        "account": a.account,
                        "requested_account": a.requested_account,
                        "amount_cents": a.amount_cents,
                        "kind": a.kind,
                        "flags": list(a.flags),
                        "conflict": conflict,
                    }
                )
            )
        yield (("" if first else ",") + ",".join(texts)).encode()
        first = False
    yield b'],"totals":' + json.dumps(totals.public()).encode()
    yield b',"conflicts":' + json.dumps(conflicts).encode() + b"}"
