"""MONAI Label's own routes, unchanged, with the bad inputs they answer 500 (or accept) refused first with a 4xx.

Found by the fuzz run (tests/server/test_fuzz.py). Each stock endpoint is wrapped, not
rewritten: the wrapper keeps the stock signature (FastAPI reads it through `__wrapped__`,
so the OpenAPI schema and the parameter parsing stay the stock ones), checks the request,
then awaits the stock endpoint. (`/session/` routes: `medvl.server.routes_session`, which
refuses the archives and folders the stock ones answered 500 for.) The checks:

- `POST /train/{model}`: the model must have a trainer (this app has none: the stock route
  starts a training process for any name and answers 200);
- `POST /batch/infer/{model}`: the model must exist (stock: 200, then a background run that fails);
- `POST /activelearning/{strategy}`: the strategy must exist (stock: 500);
- `POST /infer/wsi_v2/{model}`, `POST /infer/wsi/{model}`: the model must be a 2D (WSI) model;
  this app's are all 3D (stock: 500 for a missing image, a bad `wsi` form or a 3D model);
- `GET /logs/gpu`: needs `nvidia-smi` on the server (stock: 500 without it);
- `PUT /datastore/image/info`, `PUT /datastore/label/info` (and the deprecated
  `/datastore/updatelabelinfo`): the `info` / `params` form must be a JSON object (stock: 500);
- `GET /logs/`: `lines` at most `MAX_LOG_LINES` (stock: 500 past 2**63).
"""

from __future__ import annotations

import functools
import shutil

from fastapi import HTTPException
from monailabel.endpoints import activelearning, batch_infer, datastore, logs, train, wsi_infer
from monailabel.interfaces.utils.app import app_instance

from medvl.server.containment import shown
from medvl.server.http import json_object
from medvl.server.routing import replace_route

MAX_LOG_LINES = 1_000_000  # GET /logs/?lines=: the log's tail, read into memory


def _wrap(stock, check):
    """`stock` with `check(**kwargs)` first: FastAPI parses the stock signature (through `__wrapped__`)."""
    @functools.wraps(stock)
    async def endpoint(**kwargs):
        check(**kwargs)
        return await stock(**kwargs)
    return endpoint


def _info() -> dict:
    return app_instance().info()


def _trainer(model: str, **_) -> None:
    trainers = sorted(_info().get("trainers") or {})
    if model not in trainers:
        raise HTTPException(404, f"no trainer {shown(model)}: this server trains "
                                 f"{', '.join(trainers) if trainers else 'nothing (its tasks are inference only)'}")


def _model(model: str, **_) -> None:
    models = sorted(_info().get("models") or {})
    if model not in models:
        raise HTTPException(404, f"unknown model {shown(model)}; this server has: {', '.join(models)}")


def _wsi_model(model: str, **_) -> None:
    models = _info().get("models") or {}
    if models.get(model, {}).get("dimension") != 2:
        wsi = sorted(name for name, m in models.items() if m.get("dimension") == 2)
        raise HTTPException(404, f"no WSI (2D) model {shown(model)}: this server has "
                                 f"{', '.join(wsi) if wsi else 'none'}; 3D models answer POST /infer/<model>")


def _strategy(strategy: str, **_) -> None:
    strategies = sorted(_info().get("strategies") or {})
    if strategy not in strategies:
        raise HTTPException(404, f"unknown active learning strategy {shown(strategy)}; this server has: "
                                 f"{', '.join(strategies) or 'none'}")


def _nvidia_smi(**_) -> None:
    if shutil.which("nvidia-smi") is None:
        raise HTTPException(404, "no GPU info: nvidia-smi is not installed on this server (no NVIDIA driver)")


def _json_object(field: str):
    def check(**kwargs) -> None:
        json_object(kwargs.get(field), field, '{"comment": "checked"}')
    return check


def _log_lines(lines=None, **_) -> None:
    if lines is not None and lines > MAX_LOG_LINES:
        raise HTTPException(400, f"lines {lines} is too many: ask for at most {MAX_LOG_LINES} (the log's last lines)")


def install(app) -> None:
    """Put the checked stock routes on MONAI Label's app, in place of the stock ones."""
    routes = (
        ("/train/{model}", "POST", train.api_run_model, _trainer, ["Train"]),
        ("/batch/infer/{model}", "POST", batch_infer.api_run, _model, ["Infer"]),
        ("/activelearning/{strategy}", "POST", activelearning.api_sample, _strategy, ["ActiveLearning"]),
        ("/infer/wsi_v2/{model}", "POST", wsi_infer.api_run_wsi_v2_inference, _wsi_model, ["Infer"]),
        ("/infer/wsi/{model}", "POST", wsi_infer.api_run_wsi_inference, _wsi_model, ["Infer"]),
        ("/logs/gpu", "GET", logs.gpu_info, _nvidia_smi, ["Logs"]),
        ("/datastore/image/info", "PUT", datastore.api_put_image_info, _json_object("info"), ["Datastore"]),
        ("/datastore/label/info", "PUT", datastore.api_put_label_info, _json_object("info"), ["Datastore"]),
        ("/datastore/updatelabelinfo", "PUT", datastore.api_update_label_info, _json_object("params"), ["Datastore"]),
        ("/logs/", "GET", logs.api_get_logs, _log_lines, ["Logs"]),
    )
    hidden = {"/infer/wsi/{model}", "/datastore/updatelabelinfo"}  # deprecated, out of the stock schema too
    for path, method, stock, check, tags in routes:
        replace_route(app, path, method, _wrap(stock, check), tags=tags, include_in_schema=path not in hidden)
