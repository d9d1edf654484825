"""What only the site does (mode machine, WAN monitor, takeover): arrives with the site issue."""
