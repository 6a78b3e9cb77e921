"""Replacing one of MONAI Label's routes with ours, keeping its path, method and contract."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute


def replace_route(app: FastAPI, path: str, method: str, endpoint, **kwargs) -> int:
    """Remove the stock `method path` route(s) of `app` and add `endpoint` there; returns how many
    stock routes were removed (0 when started without them). `kwargs` go to `add_api_route`."""
    method = method.upper()
    before = len(app.router.routes)
    app.router.routes[:] = [r for r in app.router.routes
                            if not (isinstance(r, APIRoute) and r.path == path and method in r.methods)]
    removed = before - len(app.router.routes)
    app.add_api_route(path, endpoint, methods=[method], **kwargs)
    app.openapi_schema = None  # rebuilt on the next /openapi.json
    return removed
