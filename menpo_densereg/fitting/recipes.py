"""Read a fitter's declarative recipe (``recipe.toml``) without importing torch.

Every consumer of a recipe (the registry, the initialisers' ``from_fitter_dir``, the
``train`` and ``demo`` commands) reads it through :func:`load_recipe`, so that loading a
fitter never imports the training engine.
"""

import tomllib
from pathlib import Path

__all__ = ["load_recipe"]


def load_recipe(fitter_dir):
    """Read ``fitter_dir/recipe.toml`` (or a .toml file path) into a dict.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, invalid TOML, or no ``[fitter] kind``.
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
    if "kind" not in recipe.get("fitter", {}):
        raise ValueError(f"{path}: missing [fitter] kind = ...")
    recipe["_path"] = str(path)
    return recipe
