"""Tokens, admin routes, read-only mode and CORS (medvl.server.auth), over HTTP on real servers.

Two servers, started once per module: `guarded` (user + admin token, one CORS origin) and
`read_only` (loopback without a token, `MEDVL_READ_ONLY=1`). Their studies hold brain1 only
(the smallest sample), so a request that passes the checks costs little.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
import requests

from medvl.io import read_mask
from medvl.server import auth
from tests.server.conftest import SAMPLE_DIR, inner_point, requires_server

USER, ADMIN, ORIGIN = "user-token-for-tests", "admin-token-for-tests", "http://slicer.example"
IMAGE = "brain1_image"

pytestmark = [pytest.mark.server, requires_server]

# One request per guarded route: (method, path, query); every ADMIN_ROUTES entry must have one.
ADMIN_EXAMPLES = [
    ("DELETE", "/datastore/image", {"id": "no-such-image"}),
    ("DELETE", "/datastore/label", {"id": "no-such-image", "tag": "final"}),
    ("GET", "/datastore/dataset", {}),
    ("GET", "/logs/", {"lines": "5"}),
    ("GET", "/logs/gpu", {}),
    ("POST", "/train/no-such-model", {}),
    ("DELETE", "/train/", {}),
    ("GET", "/model/no-such-model", {}),
    ("DELETE", "/model/no-such-model", {}),
    ("POST", "/batch/infer/medvl_interactive", {}),
    ("DELETE", "/batch/infer", {}),
    ("POST", "/reload", {}),
    ("PUT", "/datastore/label", {"image": IMAGE, "tag": "final"}),  # when brain1 has a final label
]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def studies_with_brain1(tmp_path_factory) -> Path:
    studies = tmp_path_factory.mktemp("studies")
    shutil.copy(SAMPLE_DIR / f"{IMAGE}.nii.gz", studies)
    return studies


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from medvl.server.launch import ServerProcess

    env = {auth.TOKEN_ENV: USER, auth.ADMIN_TOKEN_ENV: ADMIN, auth.CORS_ENV: ORIGIN}
    with ServerProcess(studies_with_brain1(tmp_path_factory), env=env,
                       log_path=tmp_path_factory.mktemp("log") / "guarded.log") as server:
        yield server


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    from medvl.server.launch import ServerProcess

    with ServerProcess(studies_with_brain1(tmp_path_factory), env={auth.READ_ONLY_ENV: "1"},
                       log_path=tmp_path_factory.mktemp("log") / "read_only.log") as server:
        yield server


@pytest.fixture(scope="module")
def brain1_point():
    return inner_point(read_mask(SAMPLE_DIR / "brain1_label.nii.gz").array.astype(bool))


def call(server, method, path, query=None, token=None, **kwargs):
    headers = dict(kwargs.pop("headers", {}), **(bearer(token) if token else {}))
    return requests.request(method, server.url + path, params=query or {}, headers=headers, timeout=120, **kwargs)


def infer_form(params: dict) -> dict:
    return {"params": (None, json.dumps(params))}


# ---- the route table ----------------------------------------------------------------------
def test_every_admin_rule_has_an_example_request():
    for rule in auth.ADMIN_ROUTES:
        assert any(rule.matches(m, p) for m, p, _ in ADMIN_EXAMPLES), f"no example request for {rule}"


def test_every_route_monailabel_reserves_for_its_admin_role_is_an_admin_route_here():
    """MONAI Label's Keycloak mode marks routes RBAC(ROLE_ADMIN); the admin token guards at least those."""
    import monailabel

    endpoints = Path(monailabel.__file__).parent / "endpoints"
    found = []
    for source in endpoints.glob("*.py"):
        text = source.read_text()
        prefix = re.search(r'APIRouter\([^)]*prefix="([^"]*)"', text, re.S)
        for method, path, signature in re.findall(r'@router\.(\w+)\(\s*"([^"]*)".*?\n(?:async )?def \w+\((.*?)\):',
                                                  text, re.S):
            if "ROLE_ADMIN" in signature:
                found.append((method.upper(), (prefix.group(1) if prefix else "") + path))
    assert len(found) >= 10, found  # the scan still sees MONAI Label's routes
    for method, path in found:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        assert any(r.matches(method, concrete) for r in auth.ADMIN_ROUTES), f"{method} {path} is admin in MONAI Label"


def test_rules_match_their_routes_only():
    dataset = next(r for r in auth.ADMIN_ROUTES if r.path == "/datastore/dataset")
    assert dataset.matches("GET", "/datastore/dataset/") and dataset.matches("HEAD", "/datastore/dataset")
    assert not dataset.matches("GET", "/datastore/") and not dataset.matches("POST", "/datastore/dataset")
    policy = auth.Policy(token=USER, admin_token=ADMIN)
    assert policy.decide("GET", "/datastore/image", USER)[0] == 0  # downloading one image is a user route
    assert policy.decide("PUT", "/datastore/label", USER, final_exists=lambda: False)[0] == 0  # a first final label
    assert policy.decide("PUT", "/datastore/label", USER, final_exists=lambda: True)[0] == 403


def test_a_listener_beyond_loopback_without_a_token_refuses_everything():
    async def app(scope, receive, send):
        raise AssertionError("the request must not reach the app")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/info/", "headers": [], "query_string": b"",
             "server": ("10.1.2.3", 8000)}
    asyncio.run(auth.AuthMiddleware(app, auth.Policy())(scope, None, send))
    assert sent[0]["status"] == 403 and b"MEDVL_TOKEN" in sent[1]["body"]


# ---- tokens ---------------------------------------------------------------------------------

EVERY_KIND_OF_ROUTE = [  # MONAI Label's, ours, the docs
    ("GET", "/info/"), ("GET", "/datastore/"), ("HEAD", "/datastore/image"), ("PUT", "/session/"),
    ("POST", "/infer/medvl_interactive"), ("GET", "/medvl/progress/x"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/"), ("GET", "/static/favicon.ico"),
]


@pytest.mark.parametrize("method, path", EVERY_KIND_OF_ROUTE)
def test_no_token_or_a_wrong_one_is_401_everywhere(guarded, method, path):
    for token, words in ((None, "no token"), ("not-the-token", "a wrong token")):
        r = call(guarded, method, path, {"image": IMAGE}, token)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        if method != "HEAD":
            detail = r.json()["detail"]
            assert words in detail and "Authorization: Bearer" in detail and "\n" not in detail


def test_the_user_token_opens_monailabel_and_medvl_routes(guarded, brain1_point):
    assert call(guarded, "GET", "/info/", token=USER).json()["models"]["medvl_interactive"]
    assert call(guarded, "GET", "/datastore/", {"output": "all"}, token=USER).status_code == 200
    assert call(guarded, "GET", "/openapi.json", token=USER).status_code == 200
    r = call(guarded, "POST", "/infer/medvl_interactive", {"image": IMAGE, "output": "json"}, USER,
             files=infer_form({"foreground": [brain1_point], "propagate": False, "client_id": "auth"}))
    assert r.status_code == 200, r.text
    assert r.json()["voxels"] > 0


def test_the_medvl_clients_send_the_token(guarded, monkeypatch):
    from medvl.server.client import ServerClient

    assert ServerClient(guarded.url, token=USER).info()["models"]
    monkeypatch.setenv(auth.TOKEN_ENV, USER)
    assert ServerClient(guarded.url).info()["models"]  # $MEDVL_TOKEN by default
    with pytest.raises(requests.HTTPError, match="401"):
        ServerClient(guarded.url, token="").info()

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "MedVLSlicer"))
    from MedVLSlicerLib.client import MedVLClient
    from MedVLSlicerLib.errors import ServerError

    assert MedVLClient(guarded.url, token=USER).info()["models"]
    with pytest.raises(ServerError, match="Authorization: Bearer"):
        MedVLClient(guarded.url, token="wrong").info()


# ---- admin routes -------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, query", [e for e in ADMIN_EXAMPLES if e[0:2] != ("PUT", "/datastore/label")])
def test_admin_routes_refuse_the_user_token(guarded, method, path, query):
    r = call(guarded, method, path, query, USER)
    assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
    assert "admin route" in r.json()["detail"] and "admin token" in r.json()["detail"]


@pytest.mark.parametrize("method, path, query", [
    ("GET", "/logs/", {"lines": "5"}),
    ("DELETE", "/datastore/label", {"id": IMAGE, "tag": "no-such-tag"}),
    ("DELETE", "/batch/infer", {}),
])
def test_the_admin_token_opens_admin_routes(guarded, method, path, query):
    r = call(guarded, method, path, query, ADMIN)
    assert r.status_code not in (401, 403), (method, path, r.status_code, r.text[:200])
    assert r.status_code < 500, r.text[:300]


def test_a_final_label_is_saved_with_the_user_token_once_and_overwritten_only_with_the_admin_token(guarded):
    label = SAMPLE_DIR / "brain1_label.nii.gz"

    def put(token):
        with open(label, "rb") as f:
            return call(guarded, "PUT", "/datastore/label", {"image": IMAGE, "tag": "final"}, token,
                        files={"label": (label.name, f)}, data={"params": "{}"})

    first = put(USER)
    assert first.status_code == 200, first.text
    again = put(USER)
    assert again.status_code == 403 and "overwrites a final label" in again.json()["detail"]
    assert put(ADMIN).status_code == 200
    dataset = call(guarded, "GET", "/datastore/dataset", token=ADMIN)  # an admin route that needs a final label
    assert dataset.status_code == 200 and dataset.content[:2] == b"PK"


def test_save_label_in_infer_params_needs_the_admin_token(guarded, brain1_point):
    params = {"foreground": [brain1_point], "propagate": False, "client_id": "auth-save", "save_label": True,
              "label_tag": "original"}
    r = call(guarded, "POST", "/infer/medvl_interactive", {"image": IMAGE, "output": "json"}, USER,
             files=infer_form(params))
    assert r.status_code == 403 and "save_label" in r.json()["detail"]
    r = call(guarded, "POST", "/infer/medvl_interactive", {"image": IMAGE, "output": "json"}, ADMIN,
             files=infer_form(params))
    assert r.status_code == 200, r.text[:300]


# ---- CORS -----------------------------------------------------------------------------------
def test_cross_origin_requests_are_allowed_only_from_the_configured_origin(guarded):
    evil = call(guarded, "GET", "/info/", token=USER, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 200 and "access-control-allow-origin" not in evil.headers
    mine = call(guarded, "GET", "/info/", token=USER, headers={"Origin": ORIGIN})
    assert mine.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in mine.headers
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = call(guarded, "OPTIONS", "/infer/medvl_interactive", headers=dict(preflight, Origin=ORIGIN))
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    refused = call(guarded, "OPTIONS", "/infer/medvl_interactive", headers=dict(preflight, Origin="http://evil.example"))
    assert "access-control-allow-origin" not in refused.headers


def test_without_configured_origins_no_cross_origin_request_is_allowed(read_only):
    r = call(read_only, "GET", "/info/", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# ---- read-only ------------------------------------------------------------------------------
def test_loopback_without_a_token_works_as_before(read_only, brain1_point):
    assert call(read_only, "GET", "/info/").status_code == 200
    r = call(read_only, "POST", "/infer/medvl_interactive", {"image": IMAGE, "output": "json"},
             files=infer_form({"foreground": [brain1_point], "propagate": False}))
    assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize("method, path, query", ADMIN_EXAMPLES + [
    ("PUT", "/datastore/label", {"image": IMAGE, "tag": "draft"}),
    ("PUT", "/datastore/image", {"image": "new"}),
    ("PUT", "/datastore/image/info", {"image": IMAGE}),
])
def test_read_only_refuses_every_write_and_admin_route(read_only, method, path, query):
    r = call(read_only, method, path, query, ADMIN)
    assert r.status_code == 403, (method, path, r.status_code)
    assert r.json()["detail"].startswith("server is read-only") and "--read-only" in r.json()["detail"]


def test_read_only_refuses_save_label_in_infer(read_only, brain1_point):
    r = call(read_only, "POST", "/infer/medvl_interactive", {"image": IMAGE},
             files=infer_form({"foreground": [brain1_point], "propagate": False, "save_label": True}))
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    store = call(read_only, "GET", "/datastore/", {"output": "all"}).json()
    assert not store["objects"][IMAGE]["labels"], store["objects"][IMAGE]  # nothing was saved
