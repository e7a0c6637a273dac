"""Read a fitter's declarative recipe (``recipe.toml``) without importing torch.

Every consumer of a recipe (the registry, the initialisers' ``from_fitter_dir``, the
``train`` and ``demo`` commands) reads it through :func:`load_recipe`, so that loading a
fitter never imports the training engine.

Recipes are checked against :data:`SCHEMA` as they are read: known tables, the type of
every known key (booleans are TOML booleans, not ``"no"``), ranges, and, in the tables
whose keys are all known (:data:`STRICT_TABLES`), no unknown keys. A bad value gives one
:class:`RecipeError` naming the file, the key, the value and what was expected.
"""

import math
import tomllib
from pathlib import Path

__all__ = ["load_recipe", "validate_recipe", "RecipeError", "SCHEMA", "STRICT_TABLES"]


class RecipeError(ValueError):
    """A recipe value of the wrong type or range, or an unknown key or table."""


class _Spec:
    """What one recipe key accepts: a type, a range, choices."""

    def __init__(self, kind, lo=None, hi=None, lo_open=False, choices=None):
        self.kind, self.lo, self.hi = kind, lo, hi
        self.lo_open, self.choices = lo_open, choices

    def expected(self):
        names = {
            "bool": "a boolean (true or false)",
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "list_str": "a list of strings",
            "list_int": "a list of integers",
            "list_num": "a list of numbers",
            "list": "a list",
            "int_or_list": "an integer or a list of integers",
            "str_or_list": "a string or a list of strings",
            "table": "a table",
            "num_or_list": "a number or a list of numbers",
        }
        text = names[self.kind]
        if self.choices:
            text += " among " + ", ".join(repr(c) for c in self.choices)
        if self.lo is not None or self.hi is not None:
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo}"
            hi = "" if self.hi is None else f"<= {self.hi}"
            text += " " + " and ".join(t for t in (lo, hi) if t)
        return text

    def _number_ok(self, v, integer):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if integer and not isinstance(v, int):
            return False
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or v <= self.hi

    def accepts(self, v):
        k = self.kind
        if k == "bool":
            return isinstance(v, bool)
        if k == "int":
            return self._number_ok(v, True)
        if k == "float":
            return self._number_ok(v, False)
        if k == "str":
            return isinstance(v, str) and (not self.choices or v in self.choices)
        if k == "list":
            return isinstance(v, list)
        if k == "list_str":
            return isinstance(v, list) and all(isinstance(x, str) for x in v)
        if k == "list_int":
            return isinstance(v, list) and all(self._number_ok(x, True) for x in v)
        if k == "list_num":
            return isinstance(v, list) and all(self._number_ok(x, False) for x in v)
        if k == "int_or_list":
            items = v if isinstance(v, list) else [v]
            return all(self._number_ok(x, True) for x in items)
        if k == "str_or_list":
            items = v if isinstance(v, list) else [v]
            return all(isinstance(x, str) for x in items)
        if k == "table":
            return isinstance(v, dict)
        if k == "num_or_list":
            items = v if isinstance(v, list) else [v]
            return all(self._number_ok(x, False) for x in items)
        raise AssertionError(k)


def _b():
    return _Spec("bool")


def _i(lo=None, hi=None):
    return _Spec("int", lo, hi)


def _f(lo=None, hi=None, lo_open=False):
    return _Spec("float", lo, hi, lo_open)


def _s(*choices):
    return _Spec("str", choices=choices or None)


def _p():  # a probability
    return _f(0.0, 1.0)


_AUGMENT = {
    k: _f(0.0)
    for k in (
        "rotation_std",
        "max_rotation",
        "scale_range",
        "box_shift",
        "box_scale",
        "gt_noise",
        "init_noise",
        "noise_std",
        "aspect_range",
        "rotation",
        "scale",
        "jitter",
        "noise",
        "gamma",
        "contrast",
        "brightness",
    )
}
_AUGMENT.update(
    {
        k: _p()
        for k in ("p_init", "p_gt", "p_occlude", "p_blur", "p_flip", "p_grey", "flip")
    }
)

#: ``table -> {key: spec}``: what each known recipe key accepts.
SCHEMA = {
    "fitter": {
        "kind": _s(),
        "name": _s(),
        "display_name": _s(),
        "markup": _s(),
        "initialiser": _s(),
        "refiner": _s(),
        "refine_max_yaw": _f(0.0, 90.0, lo_open=True),
        # kind = "average" (menpo_densereg.fitting.ensemble)
        "initialisers": _Spec("list_str"),
        "shape_weights": _Spec("list_num", 0.0),
    },
    "chain": {
        "initialiser": _s(),
        "refiner": _s(),
        "name": _s(),
        "refine_max_yaw": _f(0.0, 90.0, lo_open=True),
        "initialiser_options": _Spec("table"),
    },
    "readout": {
        "markup": _s(),
        "pca": _b(),
        "n_components": _i(1),
        "radius": _f(0.0, 1.0, lo_open=True),
        "backend": _s("auto", "numpy", "torch"),
        "flip": _b(),
        "field_size": _i(8),
    },
    "inference": {"markup": _s(), "threads": _i(0), "flip": _b()},
    "train": {
        "steps": _i(1),
        "batch_size": _i(1),
        "lr": _f(0.0, lo_open=True),
        "weight_decay": _f(0.0),
        "warmup": _i(0),
        "min_lr_ratio": _f(0.0, 1.0),
        "grad_clip": _f(0.0),
        "amp": _b(),
        "seed": _i(0),
        "num_workers": _i(0),
        "val_every": _i(0),
        "ckpt_every": _i(0),
        "log_every": _i(0),
        "out_dir": _s(),
        "resume": _b(),
        "device": _s(),
        "progress": _b(),
    },
    "model": {
        "weights": _s(),
        "init_weights": _s(),
        "init_backbone": _s(),
        "backbone": _s(),
        "head": _s(),
        "fusion": _s(),
        "transfer_init": _s(),
        "input_size": _i(8),
        "width": _f(0.0, lo_open=True),
        "n_bins": _i(1),
        "n_stages": _i(1),
        "in_channels": _i(1),
        "margin": _f(0.0),
        "depth_head": _b(),
        "chained": _b(),
        "markups": _Spec("list_str"),
    },
    "mdm": {
        "weights": _s(),
        "init_weights": _s(),
        "markup": _s(),
        "crop_size": _i(8),
        "margin": _f(0.0),
        "patch_size": _i(1),
        "patch_scale": _Spec("list_num", 0.0, lo_open=True),
        "channels": _Spec("list_int", 1),
        "feature_pool": _i(1),
        "hidden": _i(1),
        "steps": _i(1),
    },
    "aam": {
        "weights": _s(),
        "markup": _s(),
        "features": _s(),
        "patch_normalisation": _s(),
        "diagonal": _i(1),
        "grey": _b(),
        "mirror": _b(),
        "max_shape_components": _i(1),
        "max_appearance_components": _i(1),
        "patch_shape": _Spec("list_int", 1),
        "scales": _Spec("list_num", 0.0, lo_open=True),
        "train": _Spec("list_str"),
        "held_out": _Spec("list_str"),
        "builtin_assets": _Spec("list_str"),
        "pseudo68": _Spec("list_str"),
        "offset68": _Spec("list_str"),
        "offset68_every": _i(1),
        "offset68_samples": _i(1),
        "consensus68": _Spec("list_str"),
        "consensus_max_faces": _i(1),
        "consensus_max_nme": _f(0.0),
        "consensus_labels": _s(),
        "consensus_labellers": _Spec("list_str"),
        "consensus_versions": _Spec("table"),
        "consensus_label": _s(),
    },
    "fit": {
        "initialiser": _s(),
        "algorithm": _s(),
        "steps": _i(1),
        "threads": _i(0),
        "flip": _b(),
        "crop_margin": _f(0.0),
        "max_iters": _Spec("int_or_list", 0),
        "n_shape": _Spec("num_or_list", 0),
        "n_appearance": _Spec("num_or_list", 0),
    },
    "data": {
        "mirror": _b(),
        "alternate": _b(),
        "train": _Spec("list_str"),
        "validation": _Spec("list"),
        "sources": _Spec("list"),
        "folder": _s(),
        "root": _s(),
        "held_out": _Spec("list_str"),
        "initialiser": _Spec("str_or_list"),
        "initialiser_options": _Spec("table"),
        "init_box_jitter": _f(0.0),
        "builtin_assets": _Spec("list_str"),
        "pseudo68": _Spec("list_str"),
        "split": _s(),
        "offset68": _Spec("list_str"),
        "offset68_every": _i(1),
        "offset68_samples": _i(1),
        "consensus68": _Spec("list_str"),
        "consensus_max_nme": _f(0.0),
        "consensus_label_missing": _b(),
        "consensus_max_faces": _i(1),
        "consensus_labels": _s(),
        "consensus_labellers": _Spec("list_str"),
        "consensus_versions": _Spec("table"),
        "consensus_label": _s(),
        "group_fractions": _Spec("table"),
        "engine_samples": _i(0),
        "engine_fraction": _p(),
        "engine_max_yaw": _f(0.0),
        "pca_samples": _i(0),
        "real_samples": _i(0),
        "synth_samples": _i(0),
        "repeats": _i(1),
        "seed": _i(0),
    },
    "augment": _AUGMENT,
    "loss": {
        "depth_weight": _f(0.0),
        "residual_weight": _f(0.0),
        "smooth_l1_beta": _f(0.0, lo_open=True),
        "schedule": _s(),
        # MDM: the loss weight of each step (menpo_densereg.mdm.train.mdm_loss)
        "step_weights": _Spec("list_num", 0.0),
    },
    "dlib": {"model_path": _s(), "box_scale": _f(0.0, lo_open=True)},
    "validation": None,  # a list of tables (DeCaFA validation sets)
}

#: Tables whose every key is known: another key there is a mistake (a typo).
STRICT_TABLES = ("fitter", "chain", "readout", "inference", "train", "loss", "dlib")


def _fail(path, where, value, expected):
    raise RecipeError(f"{path}: {where} = {value!r}: expected {expected}")


def validate_recipe(recipe, path="recipe.toml"):
    """Check a parsed recipe against :data:`SCHEMA`; return it unchanged.

    Raises
    ------
    RecipeError
        One message naming ``path``, the key, its value and what was expected.
    """
    for table, content in recipe.items():
        if str(table).startswith("_"):
            continue
        if table not in SCHEMA:
            _fail(
                path,
                f"[{table}]",
                content,
                f"one of the known tables {sorted(SCHEMA)}",
            )
        specs = SCHEMA[table]
        if specs is None:
            continue
        if not isinstance(content, dict):
            _fail(path, table, content, f"a [{table}] table")
        for key, value in content.items():
            data_augment = table == "data" and key == "augment"
            spec = specs.get(key)
            if data_augment:
                if not isinstance(value, dict):
                    _fail(path, "[data] augment", value, "a table")
                for k, v in value.items():
                    s = _AUGMENT.get(k)
                    if s is not None and not s.accepts(v):
                        _fail(path, f"[data.augment] {k}", v, s.expected())
                continue
            if spec is None:
                if table in STRICT_TABLES:
                    _fail(
                        path,
                        f"[{table}] {key}",
                        value,
                        f"a known key of [{table}] ({', '.join(sorted(specs))})",
                    )
                continue
            if not spec.accepts(value):
                _fail(path, f"[{table}] {key}", value, spec.expected())
    return recipe


def load_recipe(fitter_dir):
    """Read ``fitter_dir/recipe.toml`` (or a .toml file path) into a dict.

    The recipe is validated (:func:`validate_recipe`) as it is read.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, invalid TOML, or no ``[fitter] kind``; :class:`RecipeError` (a
        `ValueError`) for a value of the wrong type or range or an unknown key.
    """
    path = Path(fitter_dir)
    if path.is_dir():
        path = path / "recipe.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recipe not found")
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    if not isinstance(recipe.get("fitter"), dict) or "kind" not in recipe["fitter"]:
        raise ValueError(f"{path}: missing [fitter] kind = ...")
    validate_recipe(recipe, path)
    recipe["_path"] = str(path)
    return recipe
