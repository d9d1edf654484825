"""Each role's administration service, below the routers: `primary.PrimaryAdmin` (users,
accounts, printers, sites, machines, policies, transactions) and `site.SiteAdmin` (status, pull
now, merge now)."""
