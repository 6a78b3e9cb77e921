"""The REST protocol between this module and the MedVL MONAI Label server, in one place.

Every endpoint, task name, request parameter and response key the Slicer side uses is named
here; `client.py` and `logic.py` use these names and nothing else. The server's side of the
contract is `monailabel_app/` (MONAI Label 0.8.5 routes plus our infer tasks).

Voxel indices in every parameter are ITK order (i, j, k) of the image the server holds,
which is Slicer's IJK of the same file (see `geometry.py`).
"""

# --- endpoints (MONAI Label routes) ----------------------------------------------------------
INFO = "/info/"  # GET: {"name", "version", "models": {task: {"type", "labels", ...}}, ...}
INFER = "/infer/{model}"  # POST ?image=ID | ?session_id=SID, form field `params` (JSON)
PROGRESS = "/medvl/progress/{request_id}"  # GET: a running request's state, slices done
CANCEL = "/medvl/cancel/{request_id}"  # POST: stop it at the next slice (the session keeps what was done)
Q_REQUEST_ID = "request_id"  # /infer query: names the request for PROGRESS and CANCEL
SESSION = "/session/"  # PUT multipart `files` (the volume) ?expiry=S -> {"session_id", ...}
SESSION_ID = "/session/{session_id}"  # GET ?update_ts=true keeps it alive; DELETE drops it; 404 = gone
DATASTORE = "/datastore/"  # GET ?output=all: images and labels
DATASTORE_IMAGE = "/datastore/image"  # PUT ?image=ID multipart `file`; HEAD ?image=ID: exists?
DATASTORE_LABEL = "/datastore/label"  # PUT ?image=ID&tag=TAG multipart `label` + `params`; GET ?label=ID&tag=TAG
REPORT_FILE = "/medvl/report/{report_id}/{name}"  # GET report.json | report.md | overview.png of a report answer

# --- access (medvl.server.auth; docs/server_security.md) ---------------------------------------
AUTH_HEADER = "Authorization"  # "Bearer <token>" on every request when the server asks for a token
TOKEN_ENV = "MEDVL_TOKEN"  # the token the client sends when none is given
UNAUTHORIZED_STATUS = 401  # no token or a wrong one: set the token printed by `medvl serve`

# --- tasks -----------------------------------------------------------------------------------
INTERACTIVE_TASK = "medvl_interactive"  # points / boxes -> 3D mask by propagation
TEXT_TASK = "medvl_text"  # free text -> 3D mask (language layer)
REPORT_TASK = "medvl_report"  # the session's objects (obj_id list) -> structured report (JSON part carries it)
VQA_TASK = "medvl_vqa"  # question (+ the session's objects) -> answer from measured facts (JSON part)

# --- request parameters of the interactive task ------------------------------------------------
# Each request carries the object's WHOLE prompt set; the server diffs it against what it
# applied (one click more = add, one less = undo, else a replay on cached embeddings).
# stock MONAI Label SAM form (what the stock MONAILabel Slicer module sends)
P_FOREGROUND = "foreground"  # [[i, j, k], ...] positive clicks
P_BACKGROUND = "background"  # [[i, j, k], ...] negative clicks
P_ROI = "roi"  # [i0, i1, j0, j1, k0, k1] box
P_LABEL = "label"  # name of the structure (segment name)
P_RESET_STATE = "reset_state"  # true: forget this object's earlier prompts first
# our richer form
P_BOXES = "boxes"  # [[[i0, j0, k0], [i1, j1, k1]], ...] inclusive corners, flat on one axis
P_AXIS = "axis"  # "i" | "j" | "k": slicing / propagation axis
P_OBJ_ID = "obj_id"  # int >= 1: which object of the session the prompts belong to
P_UNDO = "undo"  # n >= 1: drop the object's last n prompts (needs the live session)
P_MEDVL_SESSION = "medvl_session"  # the generation the last answer gave: continue exactly it, else 410
P_PROPAGATE = "propagate"  # false: only the prompted slice (fast preview)
P_CROP = "crop"  # true: answer with only the changed bounding box and its offset
P_OUTPUT_LABELS = "output_labels"  # "object" (0/1 mask of obj_id) or "all" (voxel = object id)
P_TEXT = "text"  # the text prompt of the text task (report task: extra prompts to solve and report on)
P_REFINE = "refine"  # text/report/vqa: "hu" | "engine" | "auto" nodule refinement (default: the server's)
P_QUESTION = "question"  # the question of the vqa task
P_DICOM_SR = "dicom_sr"  # report task: also the DICOM SR + SEG; the datastore id of the DICOM-backed image
P_MODALITY = "modality"  # text/report/vqa: "CT" | "MR" overrides the image's modality (absent: read or inferred)
MODALITY_CHOICES = ("auto", "CT", "MR")  # the module's selector; "auto" sends no P_MODALITY
P_CLIENT_ID = "client_id"  # which client's state on a shared image
P_RESULT_EXTENSION = "result_extension"  # ".nrrd" or ".nii.gz"

# --- response (JSON part) ----------------------------------------------------------------------
R_LATENCIES = "latencies"  # {stage: seconds}
R_CROP = "crop"  # {"offset_ijk": [i, j, k], "size_ijk": [...]} when cropped
R_CHANGED = "changed"  # false with crop: nothing changed, no mask file
R_SESSION = "session"  # {"key", "medvl_session": generation, "requests"}
R_PROMPT_SET = "prompt_set"  # the object's prompts as the server holds them + "undo_steps", "whole_mask"
R_SLICE_RANGE = "slice_range"  # [first, last] slice holding the object, along its axis
R_VOXELS = "voxels"  # number of object voxels
R_VOLUME_ML = "volume_ml"  # object volume in mL
R_REPORT = "report"  # report text, markdown (report task)
R_REPORT_JSON = "report_json"  # the report's facts, as report.json (report task)
R_REPORT_FILES = "files"  # {"json", "md", "overview"; "sr", "seg" with P_DICOM_SR}: paths to GET (report task)
R_LANGUAGE = "language"  # the language backend that answered: {"backend": "offline" | "vlm", "family", "model", ...}
R_NARRATOR = "narrator"  # report: who wrote the narrative ("deterministic", "smollm2", "vlm")
R_UNDERSTOOD_AS = "understood_as"  # one line: what the text prompt was grounded to (text task)
R_ANSWER = "answer"  # the answer text (vqa task); "answerable": false when it cannot be answered

# --- a session is gone -------------------------------------------------------------------------
SESSION_GONE_STATUS = 410  # medvl session evicted / expired (sent medvl_session no longer live)
SESSION_NOT_FOUND_STATUS = 404  # GET/DELETE /session/<id>: MONAI Label forgot the uploaded volume
# an infer on an expired MONAI Label session_id is answered 400 with this in its reason
SESSION_EXPIRED_MARKER = "expired session_id"
