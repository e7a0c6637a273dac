"""menpo-densereg: learned initialisers (DenseReg, DeCaFA) for menpo deformable fitting.

Importing the package applies :mod:`menpo_densereg.compat` so that menpo, menpofit,
menpo3d and menpodetect work on numpy 2 / scipy >= 1.14 / Pillow >= 12.
"""

from menpo_densereg import compat as _compat

_compat.apply()

__version__ = "0.1.0"
