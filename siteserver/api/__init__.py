"""The HTTP layer: thin routers over the role backends."""
