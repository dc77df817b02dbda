"""sephnet's portable core: the subset of detectron2's public API that sephnet uses.

Pure PyTorch + fvcore + pycocotools + OpenCV (torchvision's ops only when they import
and run). Import paths mirror detectron2's: ``detectron2.a.b.Name`` lives at
``sephnet.d2.a.b.Name`` with the same signature, defaults, config keys and module
attribute names (so ``state_dict`` keys match). Semantics follow detectron2 v0.6.

sephnet's own components never import this package directly; they go through
:mod:`sephnet.backend`.
"""
__version__ = "0.6"
