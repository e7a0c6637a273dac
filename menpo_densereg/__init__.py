"""menpo-densereg: learned initialisers (DenseReg, DeCaFA) for menpo deformable fitting.

Importing the package applies :mod:`menpo_densereg.compat` so that menpo, menpofit,
menpo3d and menpodetect work on numpy 2 / scipy >= 1.14 / Pillow >= 12. It stays cheap:
only numpy is imported; the other fixes are applied by an import hook when scipy,
Pillow, menpofit or menpo3d are first imported. Subpackages are imported on demand
(``from menpo_densereg.fitting.registry import load_fitter``).
"""

from menpo_densereg import compat as _compat

_compat.apply()

__version__ = "0.1.0"
