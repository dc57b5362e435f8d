"""The threshold review page (one self-contained HTML file), written by ``ffeval --html``,
``ffcalib thresholds --html`` and ``ffrt detect --html``. Torch-free, like all of ffrt."""

from .page import ProCurve, ReviewContext, ReviewPart, build_review_page, check_page_path, this_machine, write_review_page
from .pictures import DEFAULT_PICTURES, Pictures, choose_pictured, render_pictures

__all__ = ["ProCurve", "ReviewContext", "ReviewPart", "build_review_page", "check_page_path", "this_machine", "write_review_page",
           "DEFAULT_PICTURES", "Pictures", "choose_pictured", "render_pictures"]
