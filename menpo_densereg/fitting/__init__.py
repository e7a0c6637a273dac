"""The fitter layer shared by every method: base classes, composition, the registry.

:mod:`.base` defines the :class:`~.base.Initialiser` contract (image + box → shape of a
markup, as a menpofit ``Result``) and input checks; :mod:`.composition` chains an
initialiser with a refiner (``InitialisedFitter``, the paper's "DenseReg + AAM/MDM");
:mod:`.recipes` reads a fitter's ``recipe.toml`` without torch; :mod:`.registry` finds and
loads fitters by name; :mod:`.weights` reads and writes safetensors weights that load
without executing code; :mod:`.inference` holds the shared inference helpers (thread
limits, networks from weights files).
"""
