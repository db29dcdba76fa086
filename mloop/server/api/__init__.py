"""Routers of the team server's REST API, one module per resource."""
