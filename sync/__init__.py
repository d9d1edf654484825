"""The replication protocol, both ends (wire models, signed client, mirror, merge, apply, change feed).

Arrives with the site-server issue; the package exists so the layout and the packaging are settled."""
