"""Property-based fuzz of the live server: every bad request is a 4xx with a one-line `detail`, never a 5xx.

Runs against the shared `server` fixture (the real MONAI Label server with our app):

1. `test_openapi_operations`: every operation of the server's own `/openapi.json` (path and
   query parameters, form fields, JSON bodies, uploads) gets schemathesis' coverage cases
   (boundary and schema-violating values, deterministic), then hypothesis examples from
   `operation.as_strategy`, positive and negative. Not fuzzed: `EXCLUDED` (destructive or slow
   for the shared server, reasons listed there); `test_excluded_operations_bad_input` sends
   them explicit bad input instead.
2. `test_params[<task>]`: our hypothesis strategies for the `params` JSON of every task
   (`medvl.server.protocol`): some keys valid for the volume, then one or two keys (known or
   not) set to a bad value - wrong JSON types, NaN/Infinity (Python's json reads them), huge
   or negative numbers, points outside the volume, boxes not flat, nested junk - or `params`
   that is not an object or not JSON at all, sent as the raw form text to
   `POST /infer/<task>?image=fuzz_tiny`: a 24x24x8 int16 volume uploaded for the run and
   deleted after. Valid prompts lie on one slice and `propagate` is false unless a bad value is
   drawn for it, so a request that reaches the engine stays cheap. The `smollm2` narrator is
   left out (about 50 s per report on CPU).
3. `test_every_key_with_every_kind_of_json[<task>]`: each key alone set to each kind of JSON
   value (`EDGES`), deterministic; `test_infer_query`: the query of `POST /infer/<task>`
   (`image` unknown / traversal / junk, `session_id`, `request_id`, `output`);
   `test_found_by_the_fuzz`: each 5xx the fuzz found, kept as a plain check.

Checks, per response: status < 500; a 4xx carries JSON `{"detail": "<one line>"}`. After
each run `GET /info/` still answers 200.

Bounded and repeatable: hypothesis examples are few (`MEDVL_FUZZ_EXAMPLES`: default 30 per
operation after its coverage cases, 100 per task), generation is derandomized (the same cases
every run: stable in CI), no example database, no shrinking (a failure shows the raw case, as
a curl command for the OpenAPI run), and once the module's time budget (`MEDVL_FUZZ_BUDGET_S`,
default 150 s from its first fuzz) is spent the remaining operations and tasks are skipped,
visibly, with that reason. The default run of this file took 60-100 s, server start included, on
a shared 2-core machine.

A longer fuzz, random instead of derandomized, shrinking what it finds:

    MEDVL_FUZZ_EXAMPLES=1000 MEDVL_FUZZ_BUDGET_S=3600 MEDVL_FUZZ_SEED=random \\
        PYTHONPATH=$PWD/lib python -m pytest -q tests/server/test_fuzz.py

`MEDVL_FUZZ_SEED=<integer>` replays one random run (hypothesis prints the seed of a failing one).
Outside pytest, the schemathesis CLI does the same for the OpenAPI part against a running server:
`st run http://127.0.0.1:8000/openapi.json -c not_a_server_error -n 100 -w 1
--exclude-method DELETE --exclude-path-regex '^/(train/[{]|batch/infer/|model/[{]model[}]$|datastore/dataset)'`.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs hypothesis (requirements/base.txt)")
schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (requirements/base.txt)")

import requests  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings, strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from medvl.io import write_volume  # noqa: E402
from medvl.server import protocol as P  # noqa: E402
from tests.conftest import make_synthetic_volume  # noqa: E402
from tests.server.conftest import requires_server  # noqa: E402

pytestmark = requires_server

EXAMPLES = int(os.environ.get("MEDVL_FUZZ_EXAMPLES", "0"))  # 0 -> the defaults below
OPERATION_EXAMPLES = EXAMPLES or 30  # per OpenAPI operation, after its coverage cases
PARAMS_EXAMPLES = EXAMPLES or 100  # per task: most answers are a fast 400
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

_clock: dict[str, float] = {}  # "start": when this module's first fuzz began (not import time)


def _settings(examples: int):
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if SEED else ())
    return settings(max_examples=examples, deadline=None, database=None, phases=phases, print_blob=True,
                    derandomize=not SEED, suppress_health_check=list(HealthCheck))


def _seed(test):
    return hypothesis.seed(int(SEED))(test) if SEED.isdigit() else test


def _budget_left() -> bool:
    return time.monotonic() - _clock.setdefault("start", time.monotonic()) < BUDGET_S


def _within_budget(what: str) -> None:
    if not _budget_left():
        pytest.skip(f"fuzz budget MEDVL_FUZZ_BUDGET_S={BUDGET_S:g} s spent before {what}; raise it to fuzz everything")


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
# schemathesis' pytest plugin (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets
# `Function._nodeid`), so each operation runs here: first schemathesis' coverage cases (boundary and
# schema-violating values, deterministic), then a hypothesis test on `as_strategy`, positive
# (schema-valid) and negative (schema-violating) cases; failures are collected, all reported at the end.
@pytest.fixture(scope="module")
def api_schema(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    for method, path, _why in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    return schema


def _operations(api_schema):
    for result in api_schema.get_all_operations():
        yield result.ok()  # an operation the schema does not describe well raises here, naming it


def _fuzz_operation(operation, url: str) -> list[str]:
    strategies = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]  # positive, negative
    failures = []

    def call(case):
        response = case.call(base_url=url, timeout=TIMEOUT_S)
        try:
            check_reply(response, case.as_curl_command())
        except AssertionError as error:
            failures.append(str(error).splitlines()[0] + " | " + response.text[:200].replace("\n", " "))

    schema = operation.schema  # the coverage phase: boundary and schema-violating values, deterministic
    for case in schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                           generation_config=schema.config.generation_for(operation=operation)):
        call(case)

    @_seed
    @_settings(OPERATION_EXAMPLES)
    @given(case=st.one_of(strategies))
    def fuzz(case):
        call(case)

    fuzz()
    return failures


def test_openapi_operations(server, api_schema):
    """Every operation of /openapi.json but `EXCLUDED`: no 5xx, one-line 4xx details."""
    failures, tested, skipped = [], [], []
    for operation in _operations(api_schema):
        if not _budget_left():
            skipped.append(operation.label)
            continue
        failures += _fuzz_operation(operation, server.url)
        tested.append(operation.label)
    assert not failures, f"{len(failures)} bad replies:\n" + "\n".join(dict.fromkeys(failures))
    if skipped:
        pytest.skip(f"fuzz budget MEDVL_FUZZ_BUDGET_S={BUDGET_S:g} s spent: not fuzzed {', '.join(skipped)}")
    assert len(tested) >= 20, f"only {len(tested)} operations in /openapi.json: {tested}"


def test_server_alive_after_openapi_fuzz(server):
    check_alive(server.url)


@pytest.mark.parametrize("method,path,query,status", [
    ("DELETE", "/datastore/image", {"id": "no-such-image"}, 404),
    ("DELETE", "/datastore/image", {"id": "../lung2_image"}, 404),
    ("DELETE", "/datastore/label", {"id": "no-such-image", "tag": "final"}, 404),
    ("DELETE", "/datastore/label", {"id": "lung2_image", "tag": "no-such-tag"}, 404),
    ("PUT", "/model/no-such-model", {}, 422),  # no file
    ("DELETE", "/model/no-such-model", {}, 404),
    ("POST", "/train/no-such-model", {}, 404),  # stock: 200, a training process started
    ("POST", "/batch/infer/no-such-model", {}, 404),  # stock: 200, a background run over every image
    ("POST", "/batch/infer/medvl_interactive", {"images": "some"}, 422),
    ("GET", "/datastore/dataset", {"limit_cases": "many"}, 422),
])
def test_excluded_operations_bad_input(server, method, path, query, status):
    r = requests.request(method, server.url + path, params=query, timeout=TIMEOUT_S)
    check_reply(r, f"{method} {path} {query}")
    assert r.status_code == status, f"{method} {path} {query} -> {r.status_code}: {r.text[:300]}"


# The 5xx this fuzz found (stock answer in the comment), each kept as a plain regression check.
FOUND = [
    ("POST", "/infer/medvl_interactive", {"image": "brain1_image"}, {"params": '{"undo": Infinity}'}, 400),  # 500
    ("POST", "/infer/medvl_interactive", {"image": "brain1_image"}, {"params": '{"obj_id": -Infinity}'}, 400),  # 500
    ("POST", "/infer/medvl_report", {"image": "brain1_image"}, {"params": '{"obj_id": Infinity}'}, 400),  # 500
    ("POST", "/infer/medvl_vqa", {"image": "brain1_image"},
     {"params": '{"question": "How large?", "obj_id": Infinity}'}, 400),  # 500
    ("POST", "/infer/medvl_interactive", {"image": "brain1_image", "output": "zzz"}, {}, 422),  # 422, detail a list
    ("POST", "/activelearning/no-such-strategy", {}, None, 404),  # 500
    ("POST", "/infer/wsi_v2/medvl_interactive", {}, {}, 404),  # 500 (no image)
    ("POST", "/infer/wsi_v2/medvl_interactive", {"image": "lung2_image"}, {"wsi": '{"level": "x"}'}, 404),  # 500
    ("GET", "/logs/", {"lines": 2**70}, None, 400),  # 500
    ("PUT", "/datastore/image/info", {"image": "lung2_image"}, {"info": "3"}, 400),  # 500
    ("PUT", "/datastore/label/info", {"label": "lung2_image", "tag": "final"}, {"info": "[]"}, 400),  # 500
    # 500 before medvl.server.routes_session (which refuses uncompress and folder sessions):
    ("PUT", "/session/", {"uncompress": "true"}, {"files": ("files", b"not an archive")}, 400),
    ("PUT", "/session/", {"uncompress": "true"}, {"files": ("x.zip", b"not a zip")}, 400),
    ("GET", "/session/no\nsuch", {}, None, 400),  # stock: 404, the id's newline in detail; routes_session: 400
    ("GET", "/model/info/no\nsuch", {}, None, 404),  # 404, detail on two lines
]


@pytest.mark.parametrize("method,path,query,form,status", FOUND)
def test_found_by_the_fuzz(server, method, path, query, form, status):
    files = {k: v if isinstance(v, tuple) else (None, v) for k, v in (form or {}).items()} or None
    r = requests.request(method, server.url + path, params=query, files=files, timeout=TIMEOUT_S)
    check_reply(r, f"{method} {path} {query} {form}")
    assert r.status_code == status, f"{method} {path} {query} -> {r.status_code}: {r.text[:300]}"


def test_gpu_log_without_nvidia_smi(server):
    r = requests.get(server.url + "/logs/gpu", timeout=TIMEOUT_S)  # stock: 500 without nvidia-smi
    check_reply(r, "GET /logs/gpu")
    assert r.status_code == (404 if shutil.which("nvidia-smi") is None else 200), r.text[:300]


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


# Valid values for the 24x24x8 volume (sizes i, j, k), so that one bad key is reached past the others.
# Every key is parsed before any engine work, so a bad key costs a fast 400; a fully valid request runs
# the engine, kept cheap: prompts on slice k=3 only (one encoder pass per session, then cached) and
# `propagate` false unless a bad value is drawn for it (then at most 8 slices, once per session).
PROMPT_K = 3
ijk = st.tuples(st.integers(0, 23), st.integers(0, 23)).map(lambda ij: [ij[0], ij[1], PROMPT_K])
flat_box = st.tuples(st.integers(0, 17), st.integers(0, 17), st.integers(1, 6), st.integers(1, 6)).map(
    lambda t: [[t[0], t[1], PROMPT_K], [t[0] + t[2], t[1] + t[3], PROMPT_K]])
roi = st.tuples(st.integers(0, 20), st.integers(0, 20)).map(
    lambda lo: [lo[0], lo[0] + 3, lo[1], lo[1] + 3, PROMPT_K, PROMPT_K])
TEXTS = st.sampled_from(["lungs", "the nodule in the right lung", "bone", "lesion"])
VALID_SHARED = {
    P.LABEL: st.sampled_from(["lesion", "nodule"]),
    P.OBJ_ID: st.integers(1, 3),
    P.CLIENT_ID: st.sampled_from(["fuzz", "fuzz2"]),
    P.RESULT_EXTENSION: st.sampled_from([".nrrd", ".nii.gz", "nii"]),
    P.CROP: st.booleans(),
    P.OUTPUT_LABELS: st.sampled_from(["object", "all"]),
    P.AXIS: st.just("k"),
}
VALID = {
    "medvl_interactive": VALID_SHARED | {
        P.FOREGROUND: st.lists(ijk, min_size=1, max_size=3),
        P.BACKGROUND: st.lists(ijk, max_size=2),
        P.ROI: roi | st.just([]),
        P.BOXES: st.lists(flat_box, max_size=2),
        P.RESET_STATE: st.booleans(),
        P.UNDO: st.integers(0, 2),
        P.ROI_MODE: st.sampled_from(["center", "every_slice"]),
    },
    "medvl_text": VALID_SHARED | {P.TEXT: TEXTS, P.REFINE: st.sampled_from(["hu", "auto"])},
    "medvl_report": VALID_SHARED | {P.TEXT: TEXTS | st.lists(TEXTS, max_size=2), P.NARRATOR: st.just("deterministic")},
    "medvl_vqa": VALID_SHARED | {P.QUESTION: st.sampled_from(["How large is the nodule?", "Is there a lesion?"])},
}

# Bad values: JSON of every kind, plus the edges each key's parser must refuse with a 4xx.
finite = st.integers(-3, 30) | st.integers(-(2**70), 2**70) | st.floats(-1e6, 1e6)
number = finite | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [float("inf"), float("-inf"), float("nan"), 1e308, -0.0])
scalar = st.none() | st.booleans() | number | st.text(max_size=12)
anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
index = st.lists(finite, min_size=3, max_size=3) | st.lists(number | scalar, max_size=5)  # in/outside 24x24x8
huge_id = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, 2**64, -1, 0, 256, 1.5, "1", "one",
                           True, [], {}])
junk_or = lambda *values: st.sampled_from(values) | anything  # noqa: E731
BAD_SHARED = {
    P.LABEL: junk_or("", "x" * 300, "../x", "a/b", "\x00"),
    P.OBJ_ID: huge_id | anything,
    P.CLIENT_ID: junk_or("", "x" * 300, "../x"),
    P.RESULT_EXTENSION: junk_or(".png", "../x", "", ".NRRD"),
    P.MEDVL_SESSION: junk_or("0", "abc", ""),
    P.CROP: junk_or("yes", 2, "maybe"),
    P.OUTPUT_LABELS: junk_or("none", ""),
    P.PROPAGATE: junk_or("true", 1, 2, "maybe"),
    P.AXIS: junk_or("z", "", "I", "i", "j"),
    "save_label": junk_or("true", 2, "maybe"),
    "label_tag": junk_or("final", "../x", ""),
    "result_dtype": junk_or("float64", ""),
    "image": junk_or("lung2_image", "../x"),  # reserved: the server drops these
    "session": anything,
    "session_id": anything,
}
BAD_TEXTS = st.sampled_from(["", "zzqx", "x" * 2000, "\x00", "the the the"])
BAD = {
    "medvl_interactive": BAD_SHARED | {
        P.FOREGROUND: st.lists(index | anything, max_size=4) | anything,
        P.BACKGROUND: st.lists(index | anything, max_size=4) | anything,
        P.ROI: st.lists(finite | number, max_size=7) | anything,
        P.BOXES: st.lists(st.lists(index, min_size=2, max_size=2) | st.lists(finite, max_size=6) | anything,
                          max_size=3) | anything,
        P.RESET_STATE: junk_or("maybe", 2),
        P.UNDO: huge_id | anything,
        P.ROI_MODE: junk_or("all", ""),
    },
    "medvl_text": BAD_SHARED | {P.TEXT: BAD_TEXTS | st.lists(BAD_TEXTS | anything, max_size=3) | anything,
                                P.REFINE: junk_or("none", "")},
    "medvl_report": BAD_SHARED | {P.TEXT: BAD_TEXTS | st.lists(BAD_TEXTS | anything, max_size=3) | anything,
                                  P.NARRATOR: junk_or("gpt", "")},  # not smollm2: ~50 s per report on CPU
    "medvl_vqa": BAD_SHARED | {P.QUESTION: junk_or("", "?", "x" * 2000)},
}


@st.composite
def params_object(draw, task: str) -> dict:
    """Some valid keys, then one or two keys (any, known or not) set to a bad value."""
    params = draw(st.fixed_dictionaries({P.PROPAGATE: st.just(False)}, optional=VALID[task]))
    bad = BAD[task]
    for key in draw(st.lists(st.sampled_from(sorted(bad)) | st.text(max_size=8), max_size=2, unique=True)):
        params[key] = draw(bad.get(key, anything))
    return params


def params_text(task: str) -> st.SearchStrategy[str]:
    """The raw `params` form text: mostly an object, sometimes any JSON value or not JSON at all."""
    dumps = lambda v: json.dumps(v, allow_nan=True)  # noqa: E731 (NaN, Infinity: Python's json reads them)
    broken = st.sampled_from(["", "{", "{\"foreground\": [[1, 2, 3]]", "nul", "[", "{'a': 1}", "\x00", "{}{}"])
    text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)  # form text is UTF-8: no lone surrogates
    objects = params_object(task).map(dumps)
    return st.one_of(objects, objects, objects, objects, objects, anything.map(dumps), broken, text)


def _fuzz_task(server, image: str, task: str):
    url = f"{server.url}/infer/{task}"

    @_seed
    @_settings(PARAMS_EXAMPLES)
    @given(text=params_text(task))
    def run(text):
        r = requests.post(url, params={"image": image}, files={"params": (None, text)}, timeout=TIMEOUT_S)
        check_reply(r, f"POST /infer/{task}?image={image} params={text[:400]}")

    _within_budget(task)
    run()
    check_alive(server.url)


@pytest.mark.parametrize("task", sorted(VALID))
def test_params(server, tiny_image, task):
    _fuzz_task(server, tiny_image, task)


EDGES = (None, True, 0, -1, 1.5, 2**64, float("inf"), float("-inf"), float("nan"), 1e308, "", "x", "../x", [],
         [[]], [None], [1, 2], [[1, 2, 3]], {}, {"a": 1})


@pytest.mark.parametrize("task", sorted(VALID))
def test_every_key_with_every_kind_of_json(server, tiny_image, task):
    """Each key the task reads (and a few it must ignore) set to each kind of JSON value, alone."""
    _within_budget(f"the {task} key table")
    failures = []
    for key in sorted(set(VALID[task]) | set(BAD[task])):
        for value in EDGES:
            text = json.dumps({P.PROPAGATE: False, P.CLIENT_ID: "fuzz-table", key: value}, allow_nan=True)
            r = requests.post(f"{server.url}/infer/{task}", params={"image": tiny_image},
                              files={"params": (None, text)}, timeout=TIMEOUT_S)
            try:
                check_reply(r, f"POST /infer/{task} params={text}")
            except AssertionError as error:
                failures.append(str(error).splitlines()[0])
    assert not failures, f"{len(failures)} bad replies:\n" + "\n".join(failures)


ids = st.sampled_from(["", "fuzz_tiny", "lung2_image", "no-such-image", "..", "../lung2_image", "/etc/passwd",
                       ".medvl-tmp", "lung2_image.nii.gz", "a" * 300, "%2e%2e", "\x00"]) | st.text(max_size=12)
QUERY = st.fixed_dictionaries({}, optional={
    "image": ids,
    "session_id": st.sampled_from(["", "no-such-session", "../x"]) | st.text(max_size=12),
    "request_id": st.sampled_from(["", "r1", "x" * 65, "a b", "../x"]) | st.text(max_size=12),
    "output": st.sampled_from(["image", "json", "all", "dicom_seg", "zzz", ""]),
})


@_seed
@_settings(PARAMS_EXAMPLES)
@given(task=st.sampled_from(sorted(VALID)), query=QUERY, params=st.sampled_from(
    ["{}", '{"foreground": [[5, 5, 3]], "propagate": false}', '{"text": "lungs"}', '{"question": "How large?"}']))
def _fuzz_query(url: str, task, query, params):
    query = {k: v.replace("\x00", "") for k, v in query.items()}  # requests refuses NUL in a URL
    r = requests.post(f"{url}/infer/{task}", params=query, files={"params": (None, params)}, timeout=TIMEOUT_S)
    check_reply(r, f"POST /infer/{task} {query} params={params}")


def test_infer_query(server, tiny_image):
    """`image`, `session_id`, `request_id`, `output` of POST /infer/<task>: unknown, traversal, junk."""
    _within_budget("the /infer query fuzz")
    _fuzz_query(server.url)
    check_alive(server.url)
