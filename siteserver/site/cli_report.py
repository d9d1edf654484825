"""`siteserver report reconcile --config FILE`: a running site asked for a reconciliation report
(CONTRACT.md), written to a file or standard output. Exit codes: 0 the books agree, 1 they do not
or cannot be verified, 2 a usage or configuration error, 3 the site is not running."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from siteserver.config import SiteConfig

from .cli_status import admin_token, site_url, site_verify

#: making a report of a long window checks every entry against the primary: allow it time
REPORT_TIMEOUT_SECS = 300.0
AGREE, DISAGREE, USAGE, NOT_RUNNING = 0, 1, 2, 3


def _say(text: str) -> None:
    print(f"siteserver: {text}", file=sys.stderr)


def reconcile(
    config: SiteConfig, *, since: str | None, until: str | None, form: str, output: str | None
) -> int:
    token = admin_token(config)
    url = site_url(config)
    if token is None:
        _say(f"site {config.site_id!r} has no admin token (none configured, none in {config.data_dir})")
        return NOT_RUNNING
    window = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(
            base_url=url, headers=headers, timeout=REPORT_TIMEOUT_SECS, verify=site_verify(config)
        ) as c:
            made = c.post("/api/admin/v1/reports/reconciliation", json=window)
            if made.status_code == 422:
                _say(f"the site refused the window: {made.json().get('detail', made.text[:200])}")
                return USAGE
            if made.status_code != 201:
                _say(f"the site at {url} answered HTTP {made.status_code}: {made.text[:200]}")
                return DISAGREE
            report = made.json()
            path = f"/api/admin/v1/reports/reconciliation/{report['report_id']}"
            target = Path(output) if output else None
            with c.stream("GET", path, params={"format": form}) as r:
                if r.status_code != 200:
                    _say(f"the site at {url} answered HTTP {r.status_code} for the report")
                    return DISAGREE
                if target is None:
                    for chunk in r.iter_bytes():
                        sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                else:
                    with target.open("wb") as f:
                        for chunk in r.iter_bytes():
                            f.write(chunk)
    except httpx.ConnectError as e:
        _say(f"site {config.site_id!r} is not running (nothing answers at {url}: {type(e).__name__})")
        return NOT_RUNNING
    except httpx.HTTPError as e:
        _say(f"the site at {url} did not finish the report: {e or type(e).__name__}")
        return DISAGREE
    except OSError as e:
        _say(f"cannot write {output}: {e}")
        return USAGE
    print(f"siteserver: {report['summary']}", file=sys.stderr)
    return AGREE if report["books_agree"] is True else DISAGREE
