"""DeCaFA (Dapogny et al., ICCV 2019): a cascade of U-nets with landmark attention maps.

:mod:`.network` chains full-resolution U-nets; after each stage 1×1 *transfer layers*
give landmark-wise attention maps (spatial softmax → soft-argmax), chained from the
finest markup to the coarsest (98 → 68 → 29 → 5, §3.2), fused with the image and the
features for the next stage (F5, §3.3). :mod:`.losses` is the L1 landmark loss with
increasing intermediate weights (§3.4) on data with mixed markups (:mod:`.dataset`);
:mod:`.train` trains it and :mod:`.initialiser` serves it as an initialiser.
"""
