"""MONAI Label's own FastAPI app with exception handlers that turn bad requests into 4xx.

`medvl serve` starts `monailabel.main start_server --uvicorn_app medvl.server.asgi:app`:
the stock server, routes and endpoints unchanged, plus handlers for errors the stock
endpoints raise before our app code runs (malformed `params` JSON, unknown model or
image), which the stock server answers with a bare 500. Started by plain
`monailabel start_server --app monailabel_app`, everything works the same except those
few requests get 500 instead of 4xx.

Our routes: `POST /infer/<model>` replaces the stock one (off the event loop, cancel and
progress, contained uploads: `medvl.server.routes_infer`); `PUT /datastore/image` and
`PUT /datastore/label` replace the stock ones (`medvl.server.routes_datastore`); request
`/session/` routes check their ids and uploads (`medvl.server.routes_session`); request
bodies over `max_upload_mb` are refused with 413 before they are stored
(`medvl.server.uploads.BodyLimitMiddleware`). Stock routes that answer bad input with 500 (or
accept it) are wrapped with a check first (`medvl.server.routes_stock`); FastAPI's 422 for a
parameter of the wrong type says it in one line, like every other 4xx here (an HTTPException's
`detail` that quotes a client's newline is put on one line too). `GET /medvl/report/<report id>/<report.json | report.md |
overview.png>` (`medvl.server.language.REPORT_ROUTE`) serves the files of a
`medvl_report` answer (404 once pruned or for an unknown id).

Access (`medvl.server.auth`, docs/server_security.md): every route, MONAI Label's included,
passes `AuthMiddleware` (bearer tokens, admin routes, read-only). MONAI Label's CORS middleware
(any origin with credentials when MONAI_LABEL_CORS_ORIGINS is empty) is replaced by one that
allows only the configured origins (`medvl serve --cors-origin`), none by default.
"""

from __future__ import annotations

import json
import logging

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from monailabel.app import app
from monailabel.interfaces.exception import ImageNotFoundException, LabelNotFoundException, MONAILabelError, \
    MONAILabelException

from medvl.errors import MedVLError
from medvl.server.http import one_line, status_for
from medvl.server import auth, routes_datastore, routes_infer, routes_session, routes_stock
from medvl.server.settings import ServerSettings
from medvl.server.uploads import BodyLimitMiddleware
from medvl.server.language import REPORT_ROUTE

logger = logging.getLogger(__name__)

__all__ = ["app"]


def _reply(request: Request, status: int, detail: str) -> JSONResponse:
    logger.info("%s %s -> %d %s", request.method, request.url.path, status, detail)
    return JSONResponse(status_code=status, content={"detail": detail})


@app.exception_handler(json.JSONDecodeError)
async def _malformed_json(request: Request, error: json.JSONDecodeError):
    return _reply(request, 400, one_line(f"malformed JSON in the request (params/info form field): {error.msg} at "
                                         f"character {error.pos}; send a JSON object such as {{\"foreground\": []}}"))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException):
    """Every HTTPException, the stock routes' included, with its status and a one-line `detail`: stock
    messages quote the client's value ("Session (<id>) Not Found"), which may hold a newline."""
    if isinstance(error.detail, str):
        error.detail = one_line(error.detail)
    return await http_exception_handler(request, error)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, error: RequestValidationError):
    """FastAPI's 422 for a parameter of the wrong type, as one line: where, what is wrong, the value sent."""
    problems = []
    for e in error.errors():
        where = " ".join(str(part) for part in e.get("loc", ()))
        sent = f" (got {str(e['input'])[:80]!r})" if e.get("input") is not None else ""
        problems.append(f"{where}: {e.get('msg', 'invalid')}{sent}")
    return _reply(request, 422, one_line("invalid request: " + "; ".join(problems)))


@app.exception_handler(MONAILabelException)
async def _monailabel_error(request: Request, error: MONAILabelException):
    if isinstance(error, (ImageNotFoundException, LabelNotFoundException)):
        status = 404
    elif error.error == MONAILabelError.INVALID_INPUT:
        status = 400
    else:
        status = 500
    return _reply(request, status, one_line(error.msg))


@app.exception_handler(MedVLError)
async def _medvl_error(request: Request, error: MedVLError):
    return _reply(request, status_for(error), one_line(error))


routes_infer.install(app)  # /infer off the event loop; /medvl/progress, /medvl/cancel
routes_datastore.install(app)  # PUT /datastore/image and /label: bounded, contained uploads
routes_session.install(app)  # /session/: checked ids, one checked image file
routes_stock.install(app)  # stock train, batch infer, active learning, WSI, logs, info routes: bad input -> 4xx


def _body_limit() -> int:
    """The loaded app's `max_upload_mb` (+ 1 MiB of form fields), in bytes; the default before it loads."""
    from monailabel.interfaces.utils import app as app_utils

    loaded = next(iter(app_utils.apps.values()), None)
    mb = getattr(getattr(loaded, "settings", None), "max_upload_mb", ServerSettings.max_upload_mb)
    return (int(mb) + 1) << 20


app.add_middleware(BodyLimitMiddleware, limit_bytes=_body_limit)


def _install_access(app) -> None:
    """Outermost CORS (configured origins only), then AuthMiddleware, then MONAI Label's app."""
    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    app.add_middleware(auth.AuthMiddleware)
    origins = auth.cors_origins()
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False, allow_methods=["*"],
                           allow_headers=["*"])
    logger.info("access: %s; cross-origin requests from %s", auth.Policy.from_env().describe(),
                ", ".join(origins) or "nowhere")


_install_access(app)

_MEDIA = {".json": "application/json", ".md": "text/markdown", ".png": "image/png", ".dcm": "application/dicom"}


@app.get(REPORT_ROUTE, include_in_schema=False)
async def _report_file(report_id: str, name: str):
    from monailabel.interfaces.utils.app import app_instance

    language = getattr(app_instance(), "language", None)
    path = language.report_file(report_id, name) if language is not None else None
    if path is None:
        raise HTTPException(404, f"no report file {report_id}/{name}: ask /infer/medvl_report again (the server "
                                 "keeps the newest reports only)")
    return FileResponse(path, media_type=_MEDIA.get(path.suffix, "application/octet-stream"), filename=name)
