"""The HTTP API: thin routers that parse, authorise, call `services/` and render."""
