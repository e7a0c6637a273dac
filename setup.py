"""Build hook: the shipped fitters travel inside the package.

The repository's top-level ``fitters/`` is the source of truth. ``build_py`` copies it
into the built package as ``menpo_densereg/fitters/`` (recipes, weights, cards), so that
wheels, and wheels built from the sdist (``MANIFEST.in`` puts ``fitters/`` in it), carry
every shipped fitter and :func:`menpo_densereg.fitting.registry.load_fitter` finds them
after a plain ``pip install .``. Editable installs read ``fitters/`` from the checkout.
Everything else is declared in ``setup.cfg``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent

#: files of fitters/ that are never shipped (checkpoints, temporaries, caches)
EXCLUDE = ("*.pt", "*.tmp", "*.ckpt*", "__pycache__", ".*", "runs")


class build_py_with_fitters(build_py):
    """``build_py`` that also copies ``fitters/`` to ``menpo_densereg/fitters/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds the checkout's fitters/
        src = HERE / "fitters"
        if not src.is_dir():
            raise SystemExit(f"{src}: the shipped fitters are missing from the source")
        dst = Path(self.build_lib) / "menpo_densereg" / "fitters"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*EXCLUDE))


setup(cmdclass={"build_py": build_py_with_fitters})
