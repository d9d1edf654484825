"""siteserver: the branch-office server that keeps printing when the WAN dies."""

__version__ = "0.1.0"
