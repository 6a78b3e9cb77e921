"""Language layer: free text -> masks, grounded reports, questions about the volume.

Offline by default: a real sentence encoder (all-MiniLM-L6-v2) grounds text onto a
vocabulary of concepts (`concepts`), each solved from CT Hounsfield units (`solvers`),
optionally refined by the segmentation session's box propagation; reports and answers
quote measured facts only (`report`, `vqa`), and any model-written narrative is checked
number by number (`narrative`). Real vision-language checkpoints plug in via `vlm`.

The function API (what the CLI and the server tasks call):

    ground(text) -> Grounding
    solve(volume, grounding, session=None) -> SolveResult (mask, info)
    build_report(volume, masks, texts=...) -> Report
    answer(volume, question, masks) -> Answer
"""

from medvl.language.errors import NotUnderstoodError, SolverError
from medvl.language.grounding import Grounding, ground
from medvl.language.report import Report, build_report, write_report
from medvl.language.solvers import SolveResult, SolveSettings, solve
from medvl.language.vqa import Answer, answer

__all__ = ["Answer", "Grounding", "NotUnderstoodError", "Report", "SolveResult", "SolveSettings", "SolverError",
           "answer", "build_report", "ground", "solve", "write_report"]
