"""The test kit: what the tests share, so that no test file imports another (or conftest).

- `tests.kit.primary`: real primaries started with the CLI (`start_primary`, `Primary`, the HA
  `Pair`), a bare site on one (`new_site`, `site_row`), databases, the contract's error shape.
- `tests.kit.site`: the one way to enroll and start a site process (`start_branch`, `Branch`), the
  one way to enroll a site without a process (`enrolled_site`), and what the site tests do at it.
- `tests.kit.journal`: journal entries for the sync API's merge against a real primary.
- `tests.kit.model`: a model primary behind `httpx.MockTransport` for in-process tests.
- `tests.kit.fuzz`: what both schemathesis fuzz modules share.

The sample print world itself (printers, Find-Me queue, devices, provider, users) is
`siteserver.sample`, shared with the demo and the benchmarks.
"""
