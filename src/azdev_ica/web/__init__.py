"""The web console for people: server-rendered pages (Jinja2 + htmx), static files and the
browser side of errors. Conventions: docs/console.md."""
