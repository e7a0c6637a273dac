"""DenseReg (Güler et al., CVPR 2017): dense regression of template UV coordinates.

A fully convolutional network (:mod:`.network`) predicts, for every pixel, the (u, v)
coordinate of the deformation-free template by *quantised regression* (§3.2): a K-way bin
classifier per axis with one residual regressor per bin, plus a background class; the
losses (:mod:`.losses`) are the paper's cross-entropy + smooth-L1 on the true bin.
:mod:`.readout` reads landmarks of any template markup, parts and depth off the field and
cleans landmarks with a PCA shape model (§4.2); :mod:`.initialiser` wraps it all as a
menpofit-style initialiser, :mod:`.ear` does the same in the ears' TPS space (§4.3),
:mod:`.dataset` and :mod:`.train` train it from real and synthesised dense ground truth.
"""
