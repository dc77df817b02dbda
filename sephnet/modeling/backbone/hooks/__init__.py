"""sephnet's backbone hooks (docs/components.md#backbone-hooks); importing this package registers
them in
``SEPH_BACKBONE_HOOK_REGISTRY``."""
from sephnet.modeling.backbone.hooks.base import (
    BackboneHook,
    build_backbone_hook,
    pyramid_keys,
    pyramid_level,
)
from sephnet.modeling.backbone.hooks.balance import BALANCE_VERSIONS, BalanceBackboneHook
from sephnet.modeling.backbone.hooks.fusion import FUSION_VERSIONS, FusionBackboneHook
from sephnet.modeling.backbone.hooks.non_local import NON_LOCAL_VERSIONS, NonLocalBackboneHook
from sephnet.modeling.backbone.hooks.spp import SPPBackboneHook
from sephnet.modeling.backbone.hooks.squeeze_excite import SEBackboneHook

__all__ = [
    "BackboneHook",
    "build_backbone_hook",
    "pyramid_keys",
    "pyramid_level",
    "BALANCE_VERSIONS",
    "BalanceBackboneHook",
    "FUSION_VERSIONS",
    "FusionBackboneHook",
    "NON_LOCAL_VERSIONS",
    "NonLocalBackboneHook",
    "SEBackboneHook",
    "SPPBackboneHook",
]
