"""Replacing one of MONAI Label's routes with ours, keeping its path, method and contract.

MONAI Label adds its routes with `app.include_router(router)`. FastAPI up to 0.11x copies
them into `app.router.routes`; newer FastAPI (0.16x) keeps an `_IncludedRouter` entry that
points at the original `APIRouter` and matches its routes lazily. `replace_route` handles
both: it removes the stock route wherever it lives (telling a newer router that its routes
changed) and puts ours first, so it matches before anything else on that path.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute


def replace_route(app: FastAPI, path: str, method: str, endpoint, **kwargs) -> int:
    """Remove the stock `method path` route(s) of `app` and add `endpoint` there, first; returns
    how many stock routes were removed (0 when started without them). `kwargs` go to `add_api_route`."""
    method = method.upper()
    removed = _remove(app.router, path, method, prefix="", seen=set())
    app.add_api_route(path, endpoint, methods=[method], **kwargs)
    app.router.routes.insert(0, app.router.routes.pop())  # ours first
    _changed(app.router)
    app.openapi_schema = None  # rebuilt on the next /openapi.json
    return removed


def _remove(router, path: str, method: str, prefix: str, seen: set) -> int:
    if id(router) in seen:
        return 0
    seen.add(id(router))
    removed, kept = 0, []
    for route in router.routes:
        inner = getattr(route, "original_router", None)  # FastAPI >= 0.16x: an included router
        if inner is not None:
            context = getattr(route, "include_context", None)
            removed += _remove(inner, path, method, prefix + str(getattr(context, "prefix", "") or ""), seen)
            kept.append(route)
        elif isinstance(route, APIRoute) and prefix + route.path == path and method in route.methods:
            removed += 1
        else:
            kept.append(route)
    if len(kept) != len(router.routes):
        router.routes[:] = kept
        _changed(router)
    return removed


def _changed(router) -> None:
    mark = getattr(router, "_mark_routes_changed", None)  # newer FastAPI caches its matching per version
    if mark is not None:
        mark()
