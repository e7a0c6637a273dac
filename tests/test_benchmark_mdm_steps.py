"""benchmarks/mdm_steps.py: part-by-part NME after every MDM step of a shipped chain."""

import importlib.util
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location(
        "mdm_steps", REPO / "benchmarks" / "mdm_steps.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_step_parts_follow_the_chain_from_its_start_to_its_result(tmp_path):
    import menpo.io as mio
    from menpo.image import Image

    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.evaluation.metrics import nme
    from menpo_densereg.fitting.registry import load_fitter

    mod = _module()
    chain = load_fitter("densereg-mdm-face")
    images = []
    for name in ("einstein.jpg", "takeo.ppm"):
        im = mio.import_builtin_asset(name)
        gt = im.landmarks[im.landmarks.group_labels[0]]
        im = Image(im.pixels)
        im.landmarks["PTS"] = gt
        images.append(im)
    per_step = mod.step_parts(chain, images, boxes="gt", progress=False)
    steps = chain.refiner.net.config["steps"]
    assert len(per_step) == steps + 1
    assert set(per_step[0]) == {"jaw", "eyebrow", "nose", "eye", "mouth", "all"}
    for k, im in enumerate(images):
        gt = im.landmarks["PTS"]
        res = chain.fit_from_bb(im, box_from_landmarks(gt))
        np.testing.assert_allclose(per_step[0]["all"][k], nme(res.initial_shape, gt))
        np.testing.assert_allclose(per_step[-1]["all"][k], nme(res.final_shape, gt))
    text = mod.steps_table(per_step, "two faces")
    assert "(n = 2)" in text and "| start |" in text and f"| {steps} |" in text
    mod.plot_steps(per_step, tmp_path / "steps.png", "two faces")
    assert (tmp_path / "steps.png").stat().st_size > 1000
