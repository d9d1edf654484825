"""What only the site does: its identity and enrollment, the WAN monitor with the mode machine,
and the wiring of its app (app.SiteServer)."""
