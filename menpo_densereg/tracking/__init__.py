"""Deformable face tracking in video with the learned initialisers.

Both papers track video with no temporal model beyond a good per-frame start: DenseReg
(Güler et al., CVPR 2017, §4.4) fits each 300VW frame with DenseReg and DenseReg+MDM,
and DeCaFA (Dapogny et al., ICCV 2019, §4.4) starts each frame from the box of the
previous frame's landmarks (corrected by a small box-correction CNN) before aligning.
:class:`Tracker` does this around any fitter of the project or any menpofit fitter with
``fit_from_bb`` / ``fit_from_shape``: the first frame from the face detector, every
next frame from the previous result, a fresh detection when the fit's confidence drops
or the shape degenerates, and optional one-euro smoothing of the reported shapes; each
frame's :class:`FrameRecord` says whether it was detected, tracked, re-detected or lost.
:mod:`~menpo_densereg.tracking.video` reads mp4/avi (PyAV, ffmpeg inside the wheel) and
300VW frame folders and writes overlay videos and the 300VW layout;
:mod:`~menpo_densereg.tracking.evaluate` measures jitter, losses and speed against
frame-by-frame fitting, and scores 300VW-layout folders.
"""

from menpo_densereg.tracking.evaluate import (  # noqa: F401
    evaluate_300vw,
    fit_each_frame,
    jitter,
    score_against,
    summarise,
)
from menpo_densereg.tracking.tracker import (  # noqa: F401
    STATES,
    FaceBoxes,
    FrameRecord,
    OneEuroFilter,
    Tracker,
    TrackingResult,
    default_detector,
    shape_residual,
)
from menpo_densereg.tracking.video import (  # noqa: F401
    VideoError,
    VideoWriter,
    draw_overlay,
    iter_frames,
    read_video,
    video_info,
    write_300vw,
)

__all__ = [
    "Tracker",
    "FrameRecord",
    "TrackingResult",
    "OneEuroFilter",
    "FaceBoxes",
    "default_detector",
    "shape_residual",
    "STATES",
    "VideoError",
    "VideoWriter",
    "iter_frames",
    "read_video",
    "video_info",
    "draw_overlay",
    "write_300vw",
    "fit_each_frame",
    "jitter",
    "summarise",
    "score_against",
    "evaluate_300vw",
]
