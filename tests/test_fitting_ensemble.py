"""Ensembles of initialisers (fitting.ensemble): the weighted mean shape as a start."""

import numpy as np
import menpo.io as mio
import pytest
from menpo.shape import PointCloud

from menpo_densereg.data.boxes import box_from_landmarks
from menpo_densereg.fitting.composition import BoxInitialiser, InitialisedFitter
from menpo_densereg.fitting.ensemble import AverageInitialiser
from menpo_densereg.fitting.recipes import RecipeError
from menpo_densereg.fitting.registry import load_fitter


class _Shifted(BoxInitialiser):
    """The box start moved by ``shift`` pixels, with a constant confidence."""

    def __init__(self, shift, confidence=None, markup="68"):
        super().__init__(markup=markup)
        self.shift = np.asarray(shift, dtype=float)
        self.confidence = confidence
        self.name = f"shift{shift}"

    def initialise(self, image, bounding_box):
        shape, _ = super().initialise(image, bounding_box)
        conf = None
        if self.confidence is not None:
            conf = np.full(shape.n_points, float(self.confidence))
        return PointCloud(shape.points + self.shift), conf


def _recipe(folder, text):
    """Write ``folder/recipe.toml`` (making the folder); the folder as a `str`."""
    folder.mkdir(exist_ok=True)
    (folder / "recipe.toml").write_text(text)
    return str(folder)


def _takeo():
    im = mio.import_builtin_asset("takeo.ppm")
    return im, box_from_landmarks(im.landmarks["PTS"])


def test_weighted_mean_of_the_members_shapes_and_confidences():
    im, box = _takeo()
    a, b = _Shifted([0.0, 0.0], 0.2), _Shifted([4.0, -8.0], 0.8)
    ens = AverageInitialiser([a, b], shape_weights=[3, 1])
    assert np.allclose(ens.shape_weights, [0.75, 0.25])
    shape, conf = ens.initialise(im, box)
    pa, _ = a.initialise(im, box)
    assert np.allclose(shape.points, pa.points + [1.0, -2.0])
    assert np.allclose(conf, 0.35)
    # a member without confidence: the mean has none
    _, conf = AverageInitialiser([a, _Shifted([1.0, 1.0])]).initialise(im, box)
    assert conf is None
    res = ens.fit_from_bb(im, box)  # a menpofit result in the image frame
    assert np.allclose(res.final_shape.points, shape.points)
    assert "x 0.75" in str(ens) and "ibug68" in str(ens)


def test_bad_members_and_weights_are_refused():
    a, b = _Shifted([0, 0]), _Shifted([1, 1])
    with pytest.raises(ValueError, match="at least two"):
        AverageInitialiser([a])
    with pytest.raises(ValueError, match="one weight per initialiser"):
        AverageInitialiser([a, b], shape_weights=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        AverageInitialiser([a, b], shape_weights=[1, -1])
    with pytest.raises(ValueError, match="non-negative"):
        AverageInitialiser([a, b], shape_weights=[0, 0])

    five = _Shifted([0, 0])
    five.markup = "five"
    with pytest.raises(ValueError, match="gives five landmarks, not ibug68"):
        AverageInitialiser([a, five])


def test_recipe_builds_an_average_that_starts_a_chain(tmp_path):
    ens_dir = tmp_path / "box-twice"
    ens = load_fitter(
        _recipe(
            ens_dir,
            '[fitter]\nkind = "average"\nname = "box-twice"\n'
            'initialisers = ["box", "box"]\nshape_weights = [1.0, 1.0]\n',
        )
    )
    assert isinstance(ens, AverageInitialiser) and ens.name == "box-twice"
    im, box = _takeo()
    # two identical members: the mean is the member's shape
    same, _ = BoxInitialiser().initialise(im, box)
    assert np.allclose(ens.initialise(im, box)[0].points, same.points)
    chain = load_fitter(
        _recipe(
            tmp_path / "chain",
            '[fitter]\nkind = "chain"\nname = "c"\ninitialiser = "box-twice"\n'
            'refiner = "mdm-face"\n',
        )
    )
    assert isinstance(chain, InitialisedFitter)
    assert isinstance(chain.initialiser, AverageInitialiser)
    res = chain.fit_from_bb(im, box)
    assert np.allclose(res.initial_shape.points, same.points)
    assert res.final_shape.n_points == 68
    missing = _recipe(ens_dir, '[fitter]\nkind = "average"\n')
    with pytest.raises(ValueError, match="initialisers = \\[...\\] missing"):
        load_fitter(missing, cache=False)
    bad = _recipe(ens_dir, '[fitter]\nkind = "average"\ninitialisers = "box"\n')
    with pytest.raises(RecipeError, match="initialisers.*a list of strings"):
        load_fitter(bad, cache=False)


def test_shipped_initialisers_average_exactly():
    im, box = _takeo()
    dr, dc = load_fitter("densereg-face-pca"), load_fitter("decafa-face")
    ens = AverageInitialiser([dr, dc])
    shape, conf = ens.initialise(im, box)
    a, ca = dr.initialise(im, box)
    b, cb = dc.initialise(im, box)
    assert np.allclose(shape.points, 0.5 * (a.points + b.points), atol=1e-9)
    assert conf.shape == (68,) and np.allclose(conf, 0.5 * (ca + cb))


def test_options_go_to_the_members_that_have_them():
    im, box = _takeo()
    dr, dc = load_fitter("densereg-face-pca"), load_fitter("decafa-face")
    ens = AverageInitialiser([dr, dc], shape_weights=[1, 3], name="e")
    n = 2 if dr.n_components != 2 else 3
    other = ens.with_options(n_components=n)
    assert other.initialisers[0].n_components == n and other.initialisers[1] is dc
    assert ens.initialisers[0] is dr and other.name == "e"  # the original is unchanged
    assert np.allclose(other.shape_weights, [0.25, 0.75])
    a, _ = dr.with_options(n_components=n).initialise(im, box)
    b, _ = dc.initialise(im, box)
    got = other.initialise(im, box)[0].points
    assert np.allclose(got, 0.25 * a.points + 0.75 * b.points, atol=1e-9)
    assert not np.allclose(got, ens.initialise(im, box)[0].points)
    with pytest.raises(ValueError, match="no member of 'e' has them"):
        ens.with_options(bogus=1)


def test_a_chain_recipe_gives_its_initialiser_options(tmp_path):
    im, box = _takeo()
    standalone = load_fitter("densereg-face-pca")
    n = 2 if standalone.n_components != 2 else 3
    text = (
        '[fitter]\nkind = "chain"\nname = "c"\ninitialiser = "{}"\n'
        'refiner = "mdm-face"\n[chain]\ninitialiser_options = {}\n'
    )
    chain = load_fitter(
        _recipe(
            tmp_path / "c1",
            text.format("densereg-face-pca", f"{{ n_components = {n} }}"),
        )
    )
    assert chain.initialiser.n_components == n
    assert load_fitter("densereg-face-pca") is standalone  # the registry's is untouched
    assert standalone.n_components != n
    start = standalone.with_options(n_components=n).fit_from_bb(im, box)
    res = chain.fit_from_bb(im, box)
    assert np.allclose(res.initial_shape.points, start.final_shape.points)
    with pytest.raises(ValueError, match="recipe.toml: initialiser_options"):
        load_fitter(
            _recipe(tmp_path / "c2", text.format("densereg-face-pca", "{ bogus = 1 }")),
            cache=False,
        )
    with pytest.raises(ValueError, match="initialiser 'box' takes no options"):
        load_fitter(
            _recipe(tmp_path / "c3", text.format("box", "{ n_components = 3 }")),
            cache=False,
        )
    with pytest.raises(RecipeError, match="initialiser_options"):
        load_fitter(_recipe(tmp_path / "c4", text.format("box", "7")), cache=False)
