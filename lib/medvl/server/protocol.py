"""The `medvl_interactive` request protocol: every parameter the server reads, in one place.

Requests are MONAI Label infer calls, `POST /infer/medvl_interactive?image=<id>` with a
`params` JSON form field. Two forms share one meaning - *the request carries the whole
prompt set of one object*; the server diffs it against what it applied before, so a new
click costs one prompt, a removed last click is an undo, anything else is a replay on the
cached embeddings (never a re-encode).

Stock MONAI Label Slicer client (SAM / deepgrow parameters, unchanged):

- `foreground`, `background`: `[[i, j, k], ...]` voxel indices, ITK order (i, j, k);
  all of the label's points so far, as the Slicer module sends them.
- `roi`: `[i0, i1, j0, j1, k0, k1]` inclusive voxel bounds (Slicer's `getROIPointsXYZ`),
  or `[]`. Flat on one axis -> a box on that slice; a 3D ROI -> a box on its central
  slice along `axis`, propagation limited to the ROI (or a box on every slice with
  `roi_mode` "every_slice").
- `label`: segment name; labels map to object ids (`SessionEntry.obj_id_for`).
- `reset_state`: clear this object's prompts before applying the request's.
- `client_id`, `result_extension` (".nrrd", ".nii.gz", ".nii"), `result_dtype` (uint8).

MedVL additions:

- `boxes`: `[[[i0, j0, k0], [i1, j1, k1]], ...]` corner pairs, inclusive, flat on one axis.
- `axis`: "i", "j" or "k" - slicing/propagation axis of the points (default: server's).
- `obj_id`: object id instead of `label`.
- `undo`: n >= 1 - drop the object's last n prompts (needs the live session).
- `medvl_session`: the generation a previous response returned; the request then must
  continue exactly that session, else HTTP 410 with the reason (evicted / expired).
- `crop`: true -> the image holds only the bounding box of the voxels this request
  changed (origin moved so it overlays in place); `crop.offset_ijk` in the JSON.
- `output_labels`: "object" (default, 0/1 mask of the object) or "all" (every object,
  voxel value = object id).
- `propagate`: false -> only the prompted slices (no propagation).

Every mask answer carries `prompt_set`: the object's prompts as the server's session holds
them (`foreground`, `background`, `boxes`, `axis`, `undo_steps`, `whole_mask`) - the one
history; clients show and resend it, and undo with `undo`, instead of keeping their own.
`request_id` (query parameter of `/infer`) names a request for progress and cancel
(`medvl.server.jobs`).

Language tasks (`medvl.server.language`), same session keys (`client_id`, MONAI Label
`session_id`, `medvl_session`) so their results and the interactive objects meet:

- `medvl_text`: `text` (required) - free text grounded onto a concept and solved to a
  mask, which becomes the object `label` / `obj_id` (default label: the concept's name);
  `refine` "hu" | "engine" | "auto" (default: the server's `text_refine`);
  `result_extension`, `crop`, `output_labels` as above. Answer: the mask file, and in the
  JSON `grounding`, `understood_as`, `solver`, voxels, volume_ml, latencies.
  `modality` "CT" | "MR" (all three language tasks) overrides the image's modality (DICOM
  tag, header or inferred); the prompt is grounded among that modality's concepts for the
  inferred body region. Any other value: 400 naming it.
- `medvl_report`: `obj_id` and/or `label` (one or a list) - session objects to report on
  (none named: every object of the session); `text` (one or a list) - prompts solved and
  reported too; neither and no objects: the default chest prompts. `narrator`
  "deterministic" | "smollm2" | "vlm" (default: "vlm" when the server has `--conf vlm`, else
  "deterministic"). No file; the JSON carries `report` (markdown text),
  `report_json` (the facts: report.json) and `files` (GET URLs of report.json,
  report.md, overview.png). `dicom_sr` true: also the report as a DICOM Comprehensive 3D SR
  and its SEG (`files` "sr", "seg"), for an image backed by a DICOM series
  (`medvl.server.dicom_output`); any other image: 400 naming it, before any work. A string
  names the datastore image whose series the SR references (a report on a MONAI Label
  session made from it, as the Slicer module sends): its grid and voxels must be the session's.
- `medvl_vqa`: `question` (required); `obj_id` / `label` - session objects whose masks
  the answer is about (default: none, the question's object is solved from the image).
  No file; the JSON carries `answer`, `answerable`, `intent`, `facts`, `grounding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from medvl.errors import MedVLError, PromptError
from medvl.session.state import BoxPrompt, PointPrompt, Prompt  # noqa: F401 (the prompt types requests carry)

AXES = ("i", "j", "k")
EXTENSIONS = (".nrrd", ".nii.gz", ".nii")  # result formats, all written with the image's geometry

# Parameter names (the request's `params` JSON).
FOREGROUND, BACKGROUND, ROI, LABEL, RESET_STATE = "foreground", "background", "roi", "label", "reset_state"
CLIENT_ID, RESULT_EXTENSION = "client_id", "result_extension"
BOXES, AXIS, OBJ_ID, UNDO, MEDVL_SESSION = "boxes", "axis", "obj_id", "undo", "medvl_session"
CROP, OUTPUT_LABELS, ROI_MODE, PROPAGATE = "crop", "output_labels", "roi_mode", "propagate"
TEXT, QUESTION, REFINE, NARRATOR = "text", "question", "refine", "narrator"  # language tasks
DICOM_SR = "dicom_sr"  # medvl_report: also write the report as DICOM SR + SEG
MODALITY = "modality"  # language tasks: "CT" | "MR" overrides the image's (medvl.io.MODALITIES)
MODALITIES = ("CT", "MR")
REFINE_MODES = ("hu", "engine", "auto")  # medvl.language.solvers.REFINE_MODES, without importing it
NARRATORS = ("deterministic", "smollm2", "vlm")


class BadRequestError(MedVLError):
    """A request parameter has the wrong type or value (HTTP 400)."""


@dataclass(frozen=True)
class InteractiveRequest:
    """One parsed `medvl_interactive` request; volume-independent checks done."""

    points: tuple[PointPrompt, ...] = ()  # foreground then background, in request order
    boxes: tuple[BoxPrompt, ...] = ()  # from `boxes`
    roi: tuple[int, int, int, int, int, int] | None = None  # stock ROI, bounds sorted per axis
    label: str | None = None
    obj_id: int | None = None
    axis: str | None = None  # None -> a box's axis, else the object's, else the server's default
    reset: bool = False
    undo: int = 0
    expect_session: str | None = None  # `medvl_session`
    client_id: str = ""
    result_extension: str = ".nrrd"
    crop: bool = False
    output_labels: str = "object"
    roi_mode: str = "center"
    propagate: bool = True
    ignored: tuple[str, ...] = field(default=(), compare=False)  # unknown keys, echoed back


_MONAILABEL = {  # set by MONAI Label itself (infer, batch infer) or sent by its clients; read elsewhere or harmless
    "model", "image", "session", "description", "save_label", "label_tag", "result_dtype", "device", "cache_image",
    "largest_cc", "pylab", "result_write_to_file", "result_compress", "image_id", "image_path", "label_info",
    "timeout", "logging", "images", "_id", "_image_id", "multi_gpu", "gpus", "max_workers", "max_batch_size"}
_KNOWN = {FOREGROUND, BACKGROUND, ROI, LABEL, RESET_STATE, CLIENT_ID, RESULT_EXTENSION, BOXES, AXIS, OBJ_ID,
          UNDO, MEDVL_SESSION, CROP, OUTPUT_LABELS, ROI_MODE, PROPAGATE} | _MONAILABEL
_KNOWN_LANGUAGE = {TEXT, QUESTION, REFINE, NARRATOR, DICOM_SR, MODALITY, LABEL, OBJ_ID, CLIENT_ID, RESULT_EXTENSION,
                   MEDVL_SESSION, CROP, OUTPUT_LABELS, AXIS, PROPAGATE} | _MONAILABEL  # axis, propagate: sent by clients, unused


@dataclass(frozen=True)
class LanguageRequest:
    """One parsed `medvl_text` / `medvl_report` / `medvl_vqa` request (see the module docstring).

    The session and output fields mirror `InteractiveRequest`'s, so the mask path
    (`InteractiveService.serve_mask`) serves text results like clicks.
    """

    task: str  # "text", "report" or "vqa"
    texts: tuple[str, ...] = ()  # text: exactly one prompt; report: prompts to solve and report on
    question: str = ""  # vqa
    objects: tuple[int | str, ...] = ()  # report / vqa: session objects (obj_id or label) whose masks to use
    label: str | None = None  # text: the object the result becomes
    obj_id: int | None = None  # text: the same by id
    refine: str | None = None  # None -> the server's `text_refine`
    narrator: str | None = None  # None: the server's VLM when configured, else deterministic
    modality: str | None = None  # "CT" / "MR": overrides the image's modality; None: read or inferred
    expect_session: str | None = None
    client_id: str = ""
    result_extension: str = ".nrrd"
    crop: bool = False
    output_labels: str = "object"
    undo: int = 0  # never set: a language request always may create its session
    dicom_sr: bool = False  # report: also the DICOM SR + SEG (the image must be backed by a DICOM series)
    ignored: tuple[str, ...] = field(default=(), compare=False)


def parse_language_request(params: dict, task: str) -> LanguageRequest:
    """Validate MONAI Label's merged request dict for a language task; BadRequestError names the fix."""
    if not isinstance(params, dict):
        raise BadRequestError(f"params must be a JSON object, got {type(params).__name__}")
    refine = params.get(REFINE)
    if refine is not None and refine not in REFINE_MODES:
        raise BadRequestError(f"refine {refine!r} is not one of {', '.join(REFINE_MODES)}")
    narrator = str(params[NARRATOR]) if params.get(NARRATOR) else None
    if narrator is not None and narrator not in NARRATORS:
        raise BadRequestError(f"narrator {narrator!r} is not one of {', '.join(NARRATORS)}")
    modality = params.get(MODALITY)
    if modality is not None:
        text = str(modality).strip().upper() if isinstance(modality, str) else None
        text = "MR" if text == "MRI" else text
        if text not in MODALITIES:
            raise BadRequestError(f"modality {modality!r} is not one of {', '.join(MODALITIES)} "
                                  "(leave it out to read it from the image)")
        modality = text
    texts = tuple(_strings(params.get(TEXT), TEXT))
    question = params.get(QUESTION) or ""
    label, obj_id, objects = params.get(LABEL), params.get(OBJ_ID), ()
    if task == "text":
        if len(texts) != 1:
            raise BadRequestError(f"medvl_text needs one text prompt, e.g. {{\"text\": \"the nodule in the right "
                                  f"lung\"}}; got {params.get(TEXT)!r}")
        if label is not None and not isinstance(label, str):
            raise BadRequestError(f"label must be a string (segment name), got {label!r}")
        obj_id = None if obj_id is None else _int(obj_id, OBJ_ID, minimum=1, maximum=255)
    else:
        if task == "vqa" and (not isinstance(question, str) or not question.strip()):
            raise BadRequestError(f"medvl_vqa needs a question, e.g. {{\"question\": \"How large is the "
                                  f"nodule?\"}}; got {params.get(QUESTION)!r}")
        objects = tuple(_int(v, OBJ_ID, minimum=1, maximum=255) for v in _one_or_list(obj_id)) + tuple(
            _strings(label, LABEL))
        label = obj_id = None
    return LanguageRequest(
        task=task, texts=texts, question=str(question).strip(), objects=objects, label=label or None, obj_id=obj_id,
        refine=refine, narrator=narrator, modality=modality,
        expect_session=str(params[MEDVL_SESSION]) if params.get(MEDVL_SESSION) else None,
        client_id=str(params.get(CLIENT_ID) or ""), result_extension=_extension(params),
        crop=_bool(params.get(CROP, False), CROP), output_labels=_output_labels(params),
        dicom_sr=task == "report" and _sr_flag(params.get(DICOM_SR, False)),
        ignored=tuple(sorted(k for k in params if k not in _KNOWN_LANGUAGE)),
    )


def parse_request(params: dict) -> InteractiveRequest:
    """Validate MONAI Label's merged request dict into an InteractiveRequest.

    Raises PromptError for malformed points/boxes/ROI and BadRequestError for other
    parameters, each naming the value and the expected form.
    """
    if not isinstance(params, dict):
        raise BadRequestError(f"params must be a JSON object, got {type(params).__name__}")
    axis = params.get(AXIS)
    if axis is not None and axis not in AXES:
        raise BadRequestError(f"axis {axis!r} is not one of 'i', 'j', 'k'")
    points = tuple(PointPrompt(p, True) for p in _points(params.get(FOREGROUND), FOREGROUND)) + tuple(
        PointPrompt(p, False) for p in _points(params.get(BACKGROUND), BACKGROUND))
    ext, output = _extension(params), _output_labels(params)
    roi_mode = str(params.get(ROI_MODE) or "center")
    if roi_mode not in ("center", "every_slice"):
        raise BadRequestError(f"roi_mode {roi_mode!r} is not 'center' or 'every_slice'")
    label = params.get(LABEL)
    if label is not None and not isinstance(label, str):
        raise BadRequestError(f"label must be a string (segment name), got {label!r}")
    undo = _int(params.get(UNDO, 0) or 0, UNDO, minimum=0)
    obj_id = params.get(OBJ_ID)
    expect = params.get(MEDVL_SESSION)
    return InteractiveRequest(
        points=points,
        boxes=tuple(_box(b, i) for i, b in enumerate(_list(params.get(BOXES), BOXES))),
        roi=_roi(params.get(ROI)),
        label=label or None,
        obj_id=None if obj_id is None else _int(obj_id, OBJ_ID, minimum=1, maximum=255),
        axis=axis,
        reset=_bool(params.get(RESET_STATE, False), RESET_STATE),
        undo=undo,
        expect_session=str(expect) if expect else None,
        client_id=str(params.get(CLIENT_ID) or ""),
        result_extension=ext,
        crop=_bool(params.get(CROP, False), CROP),
        output_labels=output,
        roi_mode=roi_mode,
        propagate=_bool(params.get(PROPAGATE, True), PROPAGATE),
        ignored=tuple(sorted(k for k in params if k not in _KNOWN)),
    )


def session_key(image_id: str, client_id: str, monai_session_id: str | None = None) -> str:
    """The key of a client's session: MONAI Label's session id, else image id + client id."""
    if monai_session_id:
        return f"mls:{monai_session_id}"
    return f"{image_id}@{client_id or 'anonymous'}"


def check_in_volume(request: InteractiveRequest, size_ijk: tuple[int, int, int]) -> tuple[int, ...] | None:
    """Check points and boxes lie inside a volume of `size_ijk`; return the ROI clipped to it.

    Points or box corners outside -> PromptError naming the index and the volume size.
    An ROI is clipped to the volume (Slicer's rounded ROIs often overhang by a voxel);
    one that misses the volume or covers no area -> PromptError.
    """
    def inside(ijk):
        return all(0 <= v < n for v, n in zip(ijk, size_ijk))

    size = "x".join(map(str, size_ijk))
    for p in request.points:
        if not inside(p.ijk):
            raise PromptError(f"point (i, j, k) {list(p.ijk)} is outside the volume of {size} voxels; "
                              f"indices run 0..size-1 in ITK order (i, j, k)")
    for b in request.boxes:
        if not (inside(b.lo) and inside(b.hi)):
            raise PromptError(f"box {[list(b.lo), list(b.hi)]} reaches outside the volume of {size} voxels")
    if request.roi is None:
        return None
    clipped = []
    for (lo, hi), n in zip(zip(request.roi[0::2], request.roi[1::2]), size_ijk):
        lo, hi = max(lo, 0), min(hi, n - 1)
        if lo > hi:
            raise PromptError(f"roi {list(request.roi)} [i0, i1, j0, j1, k0, k1] lies outside the volume of {size} "
                              "voxels")
        clipped += [lo, hi]
    return tuple(clipped)


def roi_boxes(roi: tuple[int, ...], axis: str, mode: str) -> tuple[list[BoxPrompt], tuple[int, ...] | None]:
    """Box prompts for a (clipped) ROI, and the 3D clip region (None for a flat ROI).

    Flat on one axis -> one box on that slice. Thick -> along `axis`, a box on the central
    slice ("center") or on every slice ("every_slice"); the mask is then limited to the ROI.
    """
    extents = [hi - lo for lo, hi in zip(roi[0::2], roi[1::2])]
    flat = [a for a, e in zip(AXES, extents) if e == 0]
    if len(flat) >= 2:
        raise PromptError(f"roi {list(roi)} [i0, i1, j0, j1, k0, k1] is empty (no area on any slice); "
                          "drag a box that spans two axes")
    lo = [roi[0], roi[2], roi[4]]
    hi = [roi[1], roi[3], roi[5]]
    if flat:
        return [BoxPrompt(tuple(lo), tuple(hi))], None
    a = AXES.index(axis)
    slices = range(lo[a], hi[a] + 1) if mode == "every_slice" else [(lo[a] + hi[a]) // 2]
    boxes = []
    for s in slices:
        l, h = list(lo), list(hi)
        l[a] = h[a] = s
        boxes.append(BoxPrompt(tuple(l), tuple(h)))
    return boxes, tuple(roi)


# ---- field parsers -------------------------------------------------------------------
def _extension(params: dict) -> str:
    ext = str(params.get(RESULT_EXTENSION) or ".nrrd").lower()
    ext = ext if ext.startswith(".") else "." + ext
    if ext not in EXTENSIONS:
        raise BadRequestError(f"result_extension {ext!r} is not one of {', '.join(EXTENSIONS)}")
    return ext


def _output_labels(params: dict) -> str:
    output = str(params.get(OUTPUT_LABELS) or "object")
    if output not in ("object", "all"):
        raise BadRequestError(f"output_labels {output!r} is not 'object' or 'all'")
    return output


def _one_or_list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _strings(value, name: str) -> list[str]:
    """A string or a list of strings; blank entries dropped."""
    out = []
    for v in _one_or_list(value):
        if not isinstance(v, str):
            raise BadRequestError(f"{name} must be a string or a list of strings, got {value!r}")
        if v.strip():
            out.append(v.strip())
    return out


def _list(value, name: str) -> list:
    if value is None or value == "":
        return []
    if not isinstance(value, (list, tuple)):
        raise PromptError(f"{name} must be a list, got {value!r}")
    return list(value)


def _index(value, what: str) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise PromptError(f"{what} must be [i, j, k] (3 voxel indices, ITK order), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise PromptError(f"{what} must hold 3 finite numbers [i, j, k], got {value!r}")
        out.append(int(round(v)))
    return tuple(out)


def _points(value, name: str) -> list[tuple[int, int, int]]:
    return [_index(p, f"{name}[{n}]") for n, p in enumerate(_list(value, name))]


def _box(value, n: int) -> BoxPrompt:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise PromptError(f"boxes[{n}] must be a corner pair [[i0, j0, k0], [i1, j1, k1]], got {value!r}")
    a, b = (_index(c, f"boxes[{n}] corner") for c in value)
    lo, hi = tuple(map(min, a, b)), tuple(map(max, a, b))
    flat = sum(l == h for l, h in zip(lo, hi))
    if flat != 1:
        raise PromptError(f"boxes[{n}] {[list(a), list(b)]} must be flat on exactly one axis (same index on it) "
                          f"and span the other two; it is flat on {flat}")
    return BoxPrompt(lo, hi)


def _roi(value) -> tuple[int, ...] | None:
    values = _list(value, ROI)
    if not values:
        return None
    if len(values) != 6 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                               for v in values):
        raise PromptError(f"roi must be [i0, i1, j0, j1, k0, k1] (6 voxel indices) or [], got {value!r}")
    v = [int(round(x)) for x in values]
    return (min(v[0], v[1]), max(v[0], v[1]), min(v[2], v[3]), max(v[2], v[3]), min(v[4], v[5]), max(v[4], v[5]))


def _sr_flag(value) -> bool:
    """`dicom_sr`: true/false, or the datastore id of the image (a non-empty string; resolved by the route)."""
    if isinstance(value, str) and value.strip() and value.strip().lower() not in ("false", "0", "no", "off"):
        return True
    return _bool(value, DICOM_SR)


def _bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise BadRequestError(f"{name} must be true or false, got {value!r}")


def _int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity, which Python's json reads
        raise BadRequestError(f"{name} must be an integer, got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise BadRequestError(f"{name} {number} is out of range [{minimum}, {maximum if maximum is not None else ''}]")
    return number
