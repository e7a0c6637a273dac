import pytest

from menpo_densereg.cli import main
from menpo_densereg.fitting.registry import fitter_dir, list_fitters, load_fitter


def test_unknown_fitter_lists_shipped_ones():
    with pytest.raises(FileNotFoundError, match="not one of the shipped fitters"):
        fitter_dir("definitely-not-a-fitter")


def test_fitter_dir_accepts_paths_and_rejects_unknown_kinds(tmp_path):
    (tmp_path / "recipe.toml").write_text("[fitter]\nkind = 'teleport'\nname = 'x'\n")
    assert fitter_dir(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="unknown fitter kind 'teleport'"):
        load_fitter(tmp_path, cache=False)
    assert main(["train", str(tmp_path)]) == 2


def test_shipped_fitters_have_recipes_and_cards():
    from menpo_densereg.fitting.registry import fitters_root
    from menpo_densereg.fitting.recipes import load_recipe

    for name in list_fitters():
        recipe = load_recipe(fitters_root() / name)
        assert recipe["fitter"]["kind"]
        assert (fitters_root() / name / "CARD.md").is_file(), name


def test_aam_spec_builds_into_the_package_cache(tmp_path, monkeypatch):
    import menpo_densereg.aam.build as build
    import menpo_densereg.aam.fitter as aam_fitter

    calls = []

    class FakeAAMFitter:
        def __init__(self, aam, name):
            self.aam, self.name = aam, name

    def fake_cached(folder, cache_path, **kwargs):
        calls.append((folder, cache_path))
        return "the-aam"

    monkeypatch.setenv("MENPO_DENSEREG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "cached_patch_aam", fake_cached)
    monkeypatch.setattr(aam_fitter, "AAMFitter", FakeAAMFitter)
    folder = tmp_path / "faces"
    fitter = load_fitter(f"aam:{folder}", cache=False)
    assert fitter.aam == "the-aam" and fitter.name == "aam[faces]"
    assert calls == [(folder, tmp_path / "cache" / "aam_faces.safetensors")]


def test_private_fitters_load_by_name_but_stay_out_of_listings(tmp_path, monkeypatch):
    from menpo_densereg.fitting import registry

    for name in ("shown", "_candidate"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.toml").write_text(f"[fitter]\nname = '{name}'\n")
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    listed = list_fitters()
    assert "shown" in listed and "_candidate" not in listed
    assert "_candidate" in list_fitters(private=True)
    assert fitter_dir("_candidate") == tmp_path / "_candidate"
