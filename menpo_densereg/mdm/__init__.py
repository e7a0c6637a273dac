"""MDM, the Mnemonic Descent Method (Trigeorgis et al., CVPR 2016), written in torch.

The refiner that DenseReg's paper puts after its initialiser (DenseReg §4.2, "DenseReg +
MDM"): a recurrent cascade that extracts patches around the current shape, encodes them
with a small CNN and regresses a shape update, with a memory carried across steps.
:mod:`.fitter` holds the network and the menpofit-style fitter (``fit_from_bb`` /
``fit_from_shape`` returning a menpofit ``Result``); :mod:`.train` trains it on starts
drawn from perturbed boxes and from the initialisers' own outputs.
"""
