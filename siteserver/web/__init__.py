"""Server-rendered admin pages (Jinja2, no JavaScript), on the same services as the API."""
