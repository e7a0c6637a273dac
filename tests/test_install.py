"""The package as users install it: wheel/sdist contents, light imports, extras.

The wheel test builds an sdist from a copy of the source tree and a wheel from that
sdist (the path pip takes from an sdist), with setuptools' PEP 517 backend and no
network, and checks that both carry every file of every shipped fitter.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "HISTORY.md",
    "LICENSE",
)


def _shipped_fitter_files():
    """``name/relative/path`` of every file of every shipped fitter in ``fitters/``."""
    files = []
    for recipe in sorted((ROOT / "fitters").glob("*/recipe.toml")):
        d = recipe.parent
        for f in sorted(d.rglob("*")):
            if f.is_file() and not f.name.startswith(".") and f.suffix != ".pt":
                files.append(f.relative_to(ROOT / "fitters").as_posix())
    return files


def _python(code, cwd, env=None, timeout=300):
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist path, wheel path) built from a copy of the source tree."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCE:
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "fitters")
    shutil.copytree(ROOT / "menpo_densereg", src / "menpo_densereg", ignore=ignore)
    shutil.copytree(
        ROOT / "fitters", src / "fitters", ignore=shutil.ignore_patterns("*.pt", ".*")
    )
    dist = tmp / "dist"
    backend = "from setuptools import build_meta as b; import sys; "
    sdist = _python(backend + f"print(b.build_sdist({str(dist)!r}))", src).split()[-1]
    with tarfile.open(dist / sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    unpacked = next((tmp / "unpacked").iterdir())
    wheel = _python(backend + f"print(b.build_wheel({str(dist)!r}))", unpacked)
    return dist / sdist, dist / wheel.split()[-1]


def test_wheel_and_sdist_carry_every_shipped_fitter(built):
    sdist, wheel = built
    expected = _shipped_fitter_files()
    assert "densereg-face/weights.safetensors" in expected
    assert "densereg-face/recipe.toml" in expected and len(expected) > 30
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(metadata).decode()
    missing = [f for f in expected if f"menpo_densereg/fitters/{f}" not in names]
    assert not missing, f"wheel lacks shipped fitter files: {missing}"
    assert not [n for n in names if n.endswith(".pt")]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names) or any(
        n.endswith(".dist-info/LICENSE") for n in names
    )
    assert "menpo_densereg/data/face_template.npz" in names
    # the package's own data files: the profile detector and the box calibrations
    assert "menpo_densereg/data/profile_detector.svm" in names
    assert "menpo_densereg/data/detector_calibration.json" in names
    with tarfile.open(sdist) as tar:
        snames = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [f for f in expected if f"fitters/{f}" not in snames]
    assert not missing, f"sdist lacks shipped fitter files: {missing}"
    # metadata: a true python_requires (tomllib), menpo3d only in the '3d' extra
    assert "Requires-Python: >=3.11" in meta
    requires = [l for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    menpo3d = [l for l in requires if "menpo3d" in l]
    assert all("; extra ==" in l for l in menpo3d), menpo3d  # never required
    assert any('extra == "3d"' in l for l in menpo3d), menpo3d
    assert any("menpowidgets" in l and "notebooks" in l for l in requires)


def test_installed_layout_finds_the_packaged_fitters(built, tmp_path):
    """Unpacked wheel, run from another folder: the registry finds the fitters."""
    _, wheel = built
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site), MENPO_DENSEREG_FITTERS="")
    out = _python(
        "import json, menpo_densereg.fitting.registry as r; "
        "print(json.dumps([str(r.fitter_dir('densereg-face')), r.list_fitters(), "
        "r.__file__]))",
        tmp_path,
        env=env,
    )
    found, names, module = json.loads(out.splitlines()[-1])
    assert module.startswith(str(site))
    assert found == str(site / "menpo_densereg" / "fitters" / "densereg-face")
    shipped = sorted(p.parent.name for p in (ROOT / "fitters").glob("*/recipe.toml"))
    assert names == shipped


def test_env_var_adds_search_folders(tmp_path, monkeypatch):
    from menpo_densereg.fitting import registry

    mine = tmp_path / "mine" / "my-fitter"
    mine.mkdir(parents=True)
    (mine / "recipe.toml").write_text('[fitter]\nkind = "densereg"\n')
    other = tmp_path / "nowhere"
    monkeypatch.setenv(
        registry.ENV_VAR, os.pathsep.join([str(other), str(mine.parent)])
    )
    roots = registry.fitters_roots()
    assert roots[:2] == [other, mine.parent]
    assert registry.fitter_dir("my-fitter") == mine
    assert "my-fitter" in registry.list_fitters()
    assert "densereg-face" in registry.list_fitters()  # shipped ones are still found
    with pytest.raises(FileNotFoundError, match=registry.ENV_VAR):
        registry.fitter_dir("no-such-fitter")


def _loaded_modules(code):
    out = _python(
        code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))", ROOT
    )
    return set(json.loads(out.splitlines()[-1]))


def test_import_and_help_do_not_import_heavy_modules():
    heavy = {"torch", "scipy", "scipy.stats", "menpofit", "menpo", "matplotlib"}
    mods = _loaded_modules("import menpo_densereg")
    assert not heavy & mods, heavy & mods
    mods = _loaded_modules(
        "from menpo_densereg.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not heavy & mods, heavy & mods
    # a recipe is read without the training engine or torch
    mods = _loaded_modules(
        "from menpo_densereg.fitting.registry import fitter_dir\n"
        "from menpo_densereg.fitting.recipes import load_recipe\n"
        "load_recipe(fitter_dir('densereg-face'))"
    )
    assert "torch" not in mods and "menpo_densereg.training" not in mods


def test_compat_fixes_arrive_with_their_modules():
    """The deferred fixes are in place as soon as menpofit/scipy are imported."""
    out = _python(
        "import menpo_densereg, sys\n"
        "assert 'scipy.integrate' not in sys.modules\n"
        "import menpofit\n"
        "import scipy.integrate, menpofit.error as e\n"
        "print(hasattr(scipy.integrate, 'simps'),"
        " getattr(e.compute_cumulative_error, '_densereg_fixed', False),"
        " e.mean_pupil_68_error.__module__)",
        ROOT,
    )
    assert out.split() == ["True", "True", "menpo_densereg.compat"]


def test_menpo3d_missing_names_the_extra(monkeypatch):
    from menpo_densereg.compat import require_menpo3d
    from menpo_densereg.template.face import build_template_data

    for name in [m for m in sys.modules if m == "menpo3d" or m.startswith("menpo3d.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "menpo3d", None)  # import menpo3d -> ImportError
    with pytest.raises(ImportError, match=r"'3d' extra.*menpo-densereg\[3d\]"):
        require_menpo3d("x")
    with pytest.raises(ImportError, match="build_template_data needs menpo3d"):
        build_template_data()


def test_plotting_helpers_leave_the_matplotlib_backend_alone(tmp_path):
    """Library code never calls matplotlib.use(): a notebook's inline backend stays."""
    code = f"""
import matplotlib
matplotlib.use("svg")
import numpy as np
import menpo_densereg
from menpo_densereg.evaluation.metrics import plot_ced
from menpo_densereg.template.overlays import dense_overlay_figure
plot_ced({{"a": [0.01, 0.05, 0.2]}}, {str(tmp_path / "ced.png")!r})
z = np.zeros((16, 16))
fig = dense_overlay_figure(np.zeros((3, 16, 16)), z, z, z > 0, z.astype(int), depth=z)
print(matplotlib.get_backend())
"""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    out = _python(code, tmp_path, env=env)
    assert out.split()[-1] == "svg"
    assert (tmp_path / "ced.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_fails_clearly_when_a_shipped_fitter_is_missing(
    monkeypatch, tmp_path, capsys
):
    from menpo_densereg.cli import main
    from menpo_densereg.fitting import registry

    monkeypatch.setattr(registry, "list_fitters", lambda: ["densereg-face"])
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "shipped fitters missing" in err and "decafa-face" in err
    assert registry.ENV_VAR in err
    assert not any(tmp_path.iterdir())  # nothing benchmarked
