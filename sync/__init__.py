"""The replication protocol, both ends (wire models, signed client, mirror, merge, apply, change feed).

So far: `signing` (Ed25519 request signatures) and `client` (the site's signing client); see
docs/sync.md."""
