"""Language layer: free text -> masks, grounded reports, questions about the volume.

Offline by default: a real sentence encoder (all-MiniLM-L6-v2) and a coverage rule ground
text onto a vocabulary of concepts (`concepts`) or refuse it (`grounding`), each solved from
CT Hounsfield units or, on brain MR, a registered atlas (`solvers`),
optionally refined by the segmentation session's box propagation; reports and answers
quote measured facts only (`report`, `vqa`), and any model-written narrative is checked
number by number (`narrative`). Real vision-language checkpoints plug in via `vlm`.

The function API (what the CLI and the server tasks call):

    ground(text, modality=None, region=None) -> Grounding   (ground_for_volume(text, volume): its context)
    solve(volume, grounding, session=None) -> SolveResult (mask, info)
    build_report(volume, masks, texts=...) -> Report
    answer(volume, question, masks) -> Answer
"""

from medvl.language.errors import NotApplicableError, NotFoundError, NotUnderstoodError, SolverError
from medvl.language.grounding import Grounding, ground, ground_for_volume
from medvl.language.report import Report, build_report, write_report
from medvl.language.solvers import SolveResult, SolveSettings, solve
from medvl.language.vqa import Answer, answer

__all__ = ["Answer", "Grounding", "NotApplicableError", "NotFoundError", "NotUnderstoodError", "Report", "SolveResult",
           "SolveSettings", "SolverError", "answer", "build_report", "ground", "ground_for_volume", "solve",
           "write_report"]
