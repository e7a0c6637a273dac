"""Patch AAMs (menpofit) as refiners after a learned start (DenseReg §4.2).

:mod:`.features` holds the feature menu (menpo's plus a SIFT-like orientation
histogram); :mod:`.build` builds a menpofit ``PatchAAM`` from annotated images, stores
it in a safe format (safetensors + JSON, no pickle) and caches it; :mod:`.fitter` fits
it with menpofit's Lucas–Kanade ``LucasKanadeAAMFitter`` from a box or from a shape given
by an initialiser; :mod:`.train` builds a recipe's AAM (``menpo-densereg train``). The
training faces come from :mod:`menpo_densereg.data.annotated` and the large pools of
:mod:`menpo_densereg.data.pseudolabels`.
"""
