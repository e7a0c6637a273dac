"""The 3D face template, dense ground truth and the data engine (DenseReg §3.1, §3.3).

:mod:`.face` holds the template mesh and its deformation-free UV space, with every
labelling defined once on it (landmark markups, face parts, depth). :mod:`.groundtruth`
fits the template to an image's landmarks (pose + shape) and rasterises (u, v), depth,
visibility and parts with a z-buffer. :mod:`.ears` defines the ears' deformation-free
space by a thin-plate spline to a reference ear (DenseReg §4.3). :mod:`.synthesis`
re-renders fitted faces under new 3D poses (300W-LP style "face profiling") with exact
dense ground truth, and :mod:`.overlays` draws UV fields and parts over images.
"""
