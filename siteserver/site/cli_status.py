"""`siteserver status --config FILE`: one screen about a running site, from its admin API."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from siteserver import tls
from siteserver.config import SiteConfig

TIMEOUT_SECS = 5.0


def admin_token(config: SiteConfig) -> str | None:
    if config.admin_token:
        return config.admin_token
    path = Path(config.data_dir) / "admin.token"
    try:
        return path.read_text().strip()
    except OSError:
        return None


def site_url(config: SiteConfig) -> str:
    host = config.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if config.tls.serves else 'http'}://{host}:{config.port}"


def site_verify(config: SiteConfig) -> ssl.SSLContext | bool:
    """How the CLI checks its own site: pinned to the certificate the site serves (generated or
    configured), so that nothing else listening on the site's address is believed."""
    if config.tls.certificate is not None:
        return tls.pinned_context(config.tls.certificate)
    if config.tls.generate:
        return tls.pinned_context(tls.generated_paths(Path(config.data_dir))[0])
    return True


def render(s: dict[str, Any]) -> str:
    lines = [
        f"site        {s['site_id']}",
        f"mode        {s['mode']} since {s.get('since') or '-'}",
        f"primary     active: {s['primary']['active'] or 'none'}",
    ]
    for e in s["primary"]["endpoints"]:
        lines.append(f"            {e['url']}  {e['state']}  last ok {e['last_ok_at'] or 'never'}")
        if e.get("note"):
            lines.append(f"              {e['note']}")
    sync = s["sync"]
    lag = f"{sync['lag_secs']:.1f} s" if sync["lag_secs"] is not None else "-"
    cursor = sync["cursor"] if sync["cursor"] is not None else "-"
    t = s.get("tls")
    if t is not None:
        served = f"https, {t['fingerprint']}" if t["serving"] == "https" else "http (no TLS)"
        lines.append(f"serves      {served}")
    lines.append(f"last sync   {sync['last_sync_at'] or 'never'}  (lag {lag}, cursor {cursor})")
    j = s["journal"]
    lines.append(
        f"journal     pending {j['pending']}, merged {j['merged']}, rejected {j['rejected']}"
        f" (of merged: {j.get('applied_with_conflict', 0)} with a conflict settled)"
    )
    m = s.get("merge")
    if m is not None and m["running"]:
        rate = f", {m['rate_per_sec']}/s" if m["rate_per_sec"] is not None else ""
        lines.append(f"merging     {m['done']} of {m['total']} since {m['started_at']}{rate}")
    x = s.get("offline_exposure")
    if x is not None:
        cap = x["site_cap_cents"]
        top = x["top_user"]
        who = f"; most by {top['username']} ({top['cents']} c)" if top else ""
        limit = f" of {cap} c site cap" if cap is not None else " (no site cap)"
        lines.append(f"offline     {x['site_cents']} c not yet merged{limit}{who}")
    if s["outages"]:
        lines.append("outages")
        for o in s["outages"]:
            lines.append(
                f"            {o['started_at']} → {o['ended_at'] or 'ongoing'}  "
                f"{o['offline_transactions']} offline transaction(s)"
            )
    else:
        lines.append("outages     none")
    return "\n".join(lines)


def show_status(config: SiteConfig) -> int:
    token = admin_token(config)
    url = site_url(config)
    if token is None:
        print(
            f"siteserver: site {config.site_id!r} is not running (no admin token in {config.data_dir})",
            file=sys.stderr,
        )
        return 1
    try:
        r = httpx.get(
            url + "/api/admin/v1/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_SECS,
            verify=site_verify(config),
        )
    except httpx.HTTPError as e:
        refused = tls.refused_certificate(e)
        print(
            f"siteserver: what answers at {url} is not site {config.site_id!r}: its TLS certificate is "
            f"not the one the site serves ({refused})"
            if refused is not None
            else f"siteserver: site {config.site_id!r} is not running (nothing answers at {url}: "
            f"{type(e).__name__})",
            file=sys.stderr,
        )
        return 1
    if r.status_code != 200:
        print(f"siteserver: the site at {url} answered HTTP {r.status_code}: {r.text[:200]}", file=sys.stderr)
        return 1
    print(render(r.json()))
    return 0
