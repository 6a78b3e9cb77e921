"""Property-based fuzz of the live server: every bad request is a 4xx with a one-line `detail`, never a 5xx.

Two runs against the shared `server` fixture (the real MONAI Label server with our app):

1. `test_openapi_operations`: schemathesis generates requests for every operation of the
   server's own `/openapi.json` (path and query parameters, form fields, JSON bodies,
   uploads), except the few listed in `EXCLUDED` (destructive or slow for the shared
   server: each has an explicit bad-input test instead, `test_excluded_operations_bad_input`).
2. `test_params_<task>`: our hypothesis strategies for the `params` JSON of every task
   (`medvl.server.protocol`: each key with plausible values, wrong types, NaN/Infinity,
   huge or negative numbers, points outside the volume, boxes not flat, nested junk, and
   `params` that is not an object or not JSON at all), sent as the raw form text to
   `POST /infer/<task>?image=<tiny image>`: a 24x24x8 int16 volume uploaded for the run
   (and deleted after), so a valid prompt that propagates costs 8 slices at most.

Checks, per response: status < 500; a 4xx carries JSON `{"detail": "<one line>"}`. After
each run `GET /info/` still answers 200.

Bounded and repeatable: examples per operation / task are few (`MEDVL_FUZZ_EXAMPLES`,
default 8 per operation, 25 per task), generation is derandomized (same cases every run,
stable in CI), no example database, no shrinking (a failure shows the raw case and the
curl command), and the whole module stops generating when its time budget
(`MEDVL_FUZZ_BUDGET_S`, default 150 s) is spent: remaining operations are skipped with
that reason, visibly. The default run takes about a minute on 2 cores.

A longer fuzz, random instead of derandomized, with shrinking of what it finds:

    MEDVL_FUZZ_EXAMPLES=500 MEDVL_FUZZ_BUDGET_S=3600 MEDVL_FUZZ_SEED=random \\
        PYTHONPATH=$PWD/lib python -m pytest -q tests/server/test_fuzz.py

(`MEDVL_FUZZ_SEED=<n>` reruns one random run; the seed of a random run is printed by
hypothesis on failure.)
"""

from __future__ import annotations

import json
import os
import time

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs hypothesis (requirements/base.txt)")
schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (requirements/base.txt)")

import requests  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings, strategies as st  # noqa: E402

from medvl.io import write_volume  # noqa: E402
from medvl.server import protocol as P  # noqa: E402
from tests.conftest import make_synthetic_volume  # noqa: E402
from tests.server.conftest import requires_server  # noqa: E402

pytestmark = requires_server

EXAMPLES = int(os.environ.get("MEDVL_FUZZ_EXAMPLES", "0"))  # 0 -> the defaults below
OPERATION_EXAMPLES = EXAMPLES or 8  # per OpenAPI operation
PARAMS_EXAMPLES = EXAMPLES or 25  # per task
BUDGET_S = float(os.environ.get("MEDVL_FUZZ_BUDGET_S", "150"))
SEED = os.environ.get("MEDVL_FUZZ_SEED", "")  # "" -> derandomized; "random"; or an integer
TINY_ID = "fuzz_tiny"
TINY_SHAPE_KJI = (8, 24, 24)  # k slices of 24 x 24: sizes i, j, k = 24, 24, 8
TIMEOUT_S = 120

# (method, path, why not fuzzed; how it is tested instead: test_excluded_operations_bad_input)
EXCLUDED = (
    ("DELETE", "/datastore/image", "deletes images the other tests of the shared server use; bad ids tested below"),
    ("DELETE", "/datastore/label", "deletes labels of the shared server's images; bad ids tested below"),
    ("PUT", "/model/{model}", "writes model files into the app folder; unknown model tested below"),
    ("DELETE", "/model/{model}", "deletes model files from the app folder; unknown model tested below"),
    ("POST", "/train/{model}", "starts a training process; this app has no trainers: unknown model tested below"),
    ("POST", "/batch/infer/{model}", "runs a task over every image (minutes on CPU); bad model/images tested below"),
    ("GET", "/datastore/dataset", "zips every image of the datastore per example (tens of MB); tested once below"),
)

_started = time.monotonic()


def _settings(examples: int):
    seeded = {} if SEED == "random" else ({"derandomize": True} if not SEED else {})
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if SEED else ())
    return settings(max_examples=examples, deadline=None, database=None, phases=phases, print_blob=True,
                    suppress_health_check=list(HealthCheck), **seeded)


def _seed(test):
    return hypothesis.seed(int(SEED))(test) if SEED.isdigit() else test


def _within_budget(what: str) -> None:
    spent = time.monotonic() - _started
    if spent > BUDGET_S:
        pytest.skip(f"fuzz budget MEDVL_FUZZ_BUDGET_S={BUDGET_S:g} s spent ({spent:.0f} s) before {what}; "
                    "raise it to fuzz everything")


def check_reply(response, what: str) -> None:
    """No 5xx; a 4xx carries JSON {"detail": "<one line>"}. `what` reproduces the request."""
    status = response.status_code
    body = response.text[:500]
    assert status < 500, f"{status} for {what}\n{body}"
    if 400 <= status < 500 and response.request.method != "HEAD":
        try:
            detail = response.json().get("detail")
        except ValueError:
            raise AssertionError(f"{status} without a JSON body for {what}\n{body}") from None
        assert isinstance(detail, str) and detail.strip(), f"{status} detail is not a string for {what}\n{body}"
        assert "\n" not in detail, f"{status} detail spans lines for {what}\n{body}"


def check_alive(url: str) -> None:
    r = requests.get(url + "/info/", timeout=60)
    assert r.status_code == 200, f"/info/ answers {r.status_code} after the fuzz: {r.text[:300]}"


# ---- 1. schemathesis over the OpenAPI schema ---------------------------------------------
@pytest.fixture(scope="module")
def api_schema(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    for method, path, _why in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@_seed
@_settings(OPERATION_EXAMPLES)
def test_openapi_operations(case, server):
    _within_budget(f"{case.method} {case.path}")
    response = case.call(timeout=TIMEOUT_S)
    check_reply(response, case.as_curl_command())


def test_server_alive_after_openapi_fuzz(server):
    check_alive(server.url)


@pytest.mark.parametrize("method,path,query", [
    ("DELETE", "/datastore/image", {"id": "no-such-image"}),
    ("DELETE", "/datastore/image", {"id": "../lung2_image"}),
    ("DELETE", "/datastore/label", {"id": "no-such-image", "tag": "final"}),
    ("DELETE", "/datastore/label", {"id": "lung2_image", "tag": "no-such-tag"}),
    ("PUT", "/model/no-such-model", {}),
    ("DELETE", "/model/no-such-model", {}),
    ("POST", "/train/no-such-model", {}),
    ("POST", "/batch/infer/no-such-model", {}),
    ("GET", "/datastore/dataset", {"limit_cases": "many"}),
])
def test_excluded_operations_bad_input(server, method, path, query):
    r = requests.request(method, server.url + path, params=query, timeout=TIMEOUT_S)
    check_reply(r, f"{method} {path} {query}")
    assert 400 <= r.status_code < 500, f"{method} {path} {query} -> {r.status_code}: {r.text[:300]}"


# ---- 2. hypothesis strategies for the `params` of every task --------------------------------
@pytest.fixture(scope="module")
def tiny_image(server, tmp_path_factory):
    """A 24x24x8 int16 image in the server's datastore for the run; deleted afterwards."""
    path = write_volume(tmp_path_factory.mktemp("fuzz") / "tiny.nii.gz", make_synthetic_volume(TINY_SHAPE_KJI))
    with open(path, "rb") as f:
        r = requests.put(server.url + "/datastore/image", params={"image": TINY_ID},
                         files={"file": ("tiny.nii.gz", f)}, timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    try:
        yield r.json()["image"]
    finally:
        requests.delete(server.url + "/datastore/image", params={"id": TINY_ID}, timeout=TIMEOUT_S)


finite = st.integers(-3, 30) | st.integers(-(2**70), 2**70) | st.floats(-1e6, 1e6)
number = finite | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([float("inf"), float("-inf"),
                                                                                      float("nan"), 1e308, -0.0])
scalar = st.none() | st.booleans() | number | st.text(max_size=12)
anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
index = st.lists(finite, min_size=3, max_size=3) | st.lists(number | scalar, max_size=5)  # [i, j, k] in/out of 24x24x8
points = st.lists(index | anything, max_size=4) | anything
box = st.lists(index, min_size=2, max_size=2) | st.lists(finite, max_size=6) | anything  # flat or not, or junk
flag = st.booleans() | st.sampled_from(["true", "false", "yes", 0, 1, 2, "", None]) | anything
oneof_or_junk = lambda *values: st.sampled_from(values) | anything  # noqa: E731
small_id = st.integers(-2, 300) | st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e400, 2**64, 1.5,
                                                  "1", "one", True]) | anything
no_propagate = st.sampled_from([False, "false", 0]) | flag  # mostly no propagation: the volume has 8 slices anyway

SHARED = {  # keys every task reads (protocol.parse_request / parse_language_request)
    P.LABEL: st.sampled_from(["lesion", "nodule", "", "x" * 300]) | anything,
    P.OBJ_ID: small_id,
    P.CLIENT_ID: st.sampled_from(["fuzz", ""]) | anything,
    P.RESULT_EXTENSION: oneof_or_junk(".nrrd", ".nii.gz", "nii", ".png", "../x"),
    P.MEDVL_SESSION: st.sampled_from(["0", "abc"]) | anything,
    P.CROP: flag,
    P.OUTPUT_LABELS: oneof_or_junk("object", "all", "none"),
    P.PROPAGATE: no_propagate,
    P.AXIS: oneof_or_junk("i", "j", "k", "z"),
    "save_label": flag,
    "label_tag": st.sampled_from(["final", "../x", ""]) | anything,
    "result_dtype": oneof_or_junk("uint8", "float64"),
    "image": anything,  # reserved: the server drops it
    "session": anything,
}
INTERACTIVE = SHARED | {
    P.FOREGROUND: points,
    P.BACKGROUND: points,
    P.ROI: st.lists(finite, min_size=6, max_size=6) | st.just([]) | anything,
    P.BOXES: st.lists(box, max_size=3) | anything,
    P.RESET_STATE: flag,
    P.UNDO: small_id,
    P.ROI_MODE: oneof_or_junk("center", "every_slice", "all"),
}
TEXTS = st.sampled_from(["lungs", "the nodule in the right lung", "bone", "", "zzqx", "x" * 2000])
LANGUAGE = SHARED | {
    P.TEXT: TEXTS | st.lists(TEXTS | anything, max_size=3) | anything,
    P.QUESTION: st.sampled_from(["How large is the nodule?", "", "?"]) | anything,
    P.REFINE: oneof_or_junk("hu", "engine", "auto", "none"),
    P.NARRATOR: st.sampled_from(["deterministic"] * 4 + ["smollm2", "gpt"]) | anything,
}


def params_text(keys: dict) -> st.SearchStrategy[str]:
    """The raw `params` form text: mostly an object with some known keys, sometimes anything at all."""
    objects = st.fixed_dictionaries({}, optional=keys) | st.fixed_dictionaries(
        {}, optional=keys).flatmap(lambda d: st.dictionaries(st.text(max_size=10), anything, max_size=2).map(
            lambda extra: {**extra, **d}))
    as_json = (objects | anything).map(lambda v: json.dumps(v, allow_nan=True))  # NaN, Infinity: Python's json
    broken = st.sampled_from(["", "{", "{\"foreground\": [[1, 2, 3]]", "nul", "[", "{'a': 1}", "\x00", "{}{}"])
    return as_json | broken | st.text(max_size=20)


def _fuzz_task(server, image: str, task: str, keys: dict):
    url = f"{server.url}/infer/{task}"

    @_seed
    @_settings(PARAMS_EXAMPLES)
    @given(text=params_text(keys))
    def run(text):
        r = requests.post(url, params={"image": image}, files={"params": (None, text)}, timeout=TIMEOUT_S)
        check_reply(r, f"POST /infer/{task}?image={image} params={text[:400]}")

    _within_budget(task)
    run()
    check_alive(server.url)


def test_params_medvl_interactive(server, tiny_image):
    _fuzz_task(server, tiny_image, "medvl_interactive", INTERACTIVE)


@pytest.mark.parametrize("task", ["medvl_text", "medvl_report", "medvl_vqa"])
def test_params_language_tasks(server, tiny_image, task):
    _fuzz_task(server, tiny_image, task, LANGUAGE)
