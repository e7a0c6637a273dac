"""Measuring fitters: errors with explicit normalisers, CED/AUC/FR, benchmarks, peers.

:mod:`.metrics` computes NME with the normaliser each markup defines (outer eye corners
for 68 points, …), CED curves and exact AUC / failure rates; :mod:`.benchmark` runs
fitters side by side on annotated folders from ground-truth or detector boxes and writes
tables, per-image CSVs and CED plots; :mod:`.peers` wraps external fitters (dlib's ERT
68-point model) behind the same interface; :mod:`.labels` measures what a label set
allows (its pixel grid's rounding floor, near-identical frames for label consistency).
"""
