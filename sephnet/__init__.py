"""sephnet: decoupled ("seph") ROI heads and the experiment log's ablations as a detectron2 project.

Framework names come from :mod:`sephnet.backend` (real detectron2 when importable,
otherwise the portable core :mod:`sephnet.d2`).
"""
__version__ = "0.1.0"
