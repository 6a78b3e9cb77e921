"""`replace_route` takes a stock route's place, whether it was added directly or by include_router."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from medvl.server.routing import replace_route


def _app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/infer")

    @router.post("/{model}")
    async def stock(model: str):
        return {"by": "stock", "model": model}

    @router.get("/{model}")
    async def stock_get(model: str):
        return {"by": "stock-get"}

    app.include_router(router)
    return app


def test_ours_answers_the_stock_path_and_the_other_methods_stay():
    app = _app()

    async def ours(model: str):
        return {"by": "ours", "model": model}

    assert replace_route(app, "/infer/{model}", "post", ours) == 1
    client = TestClient(app)
    assert client.post("/infer/m").json() == {"by": "ours", "model": "m"}
    assert client.get("/infer/m").json() == {"by": "stock-get"}
    assert set(app.openapi()["paths"]["/infer/{model}"]) == {"post", "get"}
