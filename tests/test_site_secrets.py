"""Invariant 7 at the branch: the site's database and log hold no secret in clear — passwords and
PINs only as the primary's Argon2 hashes, cards only as keyed hashes, machine tokens only as
digests — and its private key and pepper files are 0600."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.kit.primary import Primary
from tests.kit.site import COLOR, add_user, start_branch, submit

PASSWORD = "Site-Tr0ub4dor&Horse-5521"
PIN = "73620481"
CARD = "CARD-88123-SITESECRET"
ID_NUMBER = "EMP-99331-SITESECRET"


def test_the_site_keeps_no_secret_in_clear(primary: Primary, tmp_path: Path) -> None:
    branch = start_branch(primary, tmp_path)
    try:
        add_user(
            primary,
            branch,
            "sam",
            password=PASSWORD,
            pin=PIN,
            card_numbers=[CARD],
            id_number=ID_NUMBER,
            balance_cents=500,
        )
        with branch.client(branch.color_device) as dev:
            for body in (
                {"card_number": CARD},
                {"username": "sam", "password": PASSWORD},
                {"username": "sam", "pin": PIN},
                {"id_number": ID_NUMBER, "pin": PIN},
                {"username": "sam", "password": PASSWORD + "-wrong"},
            ):
                dev.post("/api/device/v1/login", json=body)
            session = dev.post("/api/device/v1/login", json={"card_number": CARD}).json()["session_id"]
            dev.post(
                f"/api/device/v1/sessions/{session}/usage",
                json={"txn_id": str(uuid.uuid4()), "kind": "copy", "pages": 1, "color": False},
            ).raise_for_status()
        submit(branch, "sam", pages=1)
        with branch.client(branch.provider) as prov:
            prov.get("/api/provider/v1/releases", params={"printer": COLOR}).raise_for_status()
    finally:
        assert branch.process.stop() == 0, branch.process.log_tail()

    pepper = (branch.data_dir / "secrets").read_text().strip()
    secrets = [
        PASSWORD,
        PIN,
        CARD,
        ID_NUMBER,
        branch.mono_device,
        branch.color_device,
        branch.provider,
        pepper,
    ]
    files = [p for p in branch.data_dir.iterdir() if p.is_file() and p.name not in ("secrets", "site.key")]
    files.append(branch.process.log_path)
    assert any(p.name == "site.db" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:6]}… in clear in {path.name}"
            assert secret.upper().encode() not in data, f"{secret[:6]}… in clear in {path.name}"
    for private in ("site.key", "secrets"):
        assert (branch.data_dir / private).stat().st_mode & 0o077 == 0, private
