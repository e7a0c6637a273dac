"""Patch AAMs (menpofit) as refiners after a learned start (DenseReg §4.2).

:mod:`.fitter` builds a menpofit ``PatchAAM`` from annotated images (features, shape and
appearance models), stores it in a safe format (safetensors + JSON, no pickle) and fits
it with menpofit's Lucas–Kanade ``LucasKanadeAAMFitter`` from a box or from a shape given
by an initialiser.
"""
