"""Data in and out: the readers of annotated sets, markups, boxes, crops, pseudo-labels.

Everything here works on menpo objects with points in ``(y, x)``: :mod:`.readers` reads
iBUG ``.pts`` trees, the 300VW layout, WFLW, CelebA and COCO keypoints into
`menpo.image.Image`; :mod:`.markups` defines each landmark markup once (groups,
normalisers, correspondences such as 98 → 68 → 29 → 5); :mod:`.boxes` holds face
detection and the detector-to-landmark box calibration; :mod:`.crop` the square face
crops every network sees; :mod:`.pseudolabels` adds labels to unlabelled or
differently-labelled faces where independent labellers agree. The folder also holds the
package's small data files (the face template arrays, the 68-point mean face).
"""
