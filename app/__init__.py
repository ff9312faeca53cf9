"""The HTTP service and drawing page: python -m app.server (see app/server.py)."""
