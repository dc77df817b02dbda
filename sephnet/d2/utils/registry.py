"""``Registry``: fvcore's name -> object registry, with errors that help.

The class *is* an fvcore ``Registry`` (a subclass), so code written against detectron2,
which re-exports fvcore's, keeps working. Two differences, both in error reporting:

* looking up an unknown name raises ``KeyError`` that lists every registered name and, for
  detectron2's model registries, the config key that chose the name;
* registering a name twice raises :class:`DuplicateRegistrationError`, which is both a
  ``ValueError`` and an ``AssertionError`` (fvcore raises the latter).
"""

from typing import Any

from fvcore.common.registry import Registry as _FvcoreRegistry

__all__ = ["Registry", "DuplicateRegistrationError"]


#: The config key that names the object looked up in each of detectron2's model registries.
CONFIG_KEYS = {
    "META_ARCH": "MODEL.META_ARCHITECTURE",
    "BACKBONE": "MODEL.BACKBONE.NAME",
    "PROPOSAL_GENERATOR": "MODEL.PROPOSAL_GENERATOR.NAME",
    "RPN_HEAD": "MODEL.RPN.HEAD_NAME",
    "ANCHOR_GENERATOR": "MODEL.ANCHOR_GENERATOR.NAME",
    "ROI_HEADS": "MODEL.ROI_HEADS.NAME",
    "ROI_BOX_HEAD": "MODEL.ROI_BOX_HEAD.NAME",
    "ROI_MASK_HEAD": "MODEL.ROI_MASK_HEAD.NAME",
    "ROI_KEYPOINT_HEAD": "MODEL.ROI_KEYPOINT_HEAD.NAME",
    "SEM_SEG_HEADS": "MODEL.SEM_SEG_HEAD.NAME",
}


class DuplicateRegistrationError(ValueError, AssertionError):
    """A second object was registered under a name that is already taken."""


class Registry(_FvcoreRegistry):
    """Maps names (as written in configs) to classes or functions.

    Usage::

        BACKBONE_REGISTRY = Registry("BACKBONE")

        @BACKBONE_REGISTRY.register()
        def build_my_backbone(cfg, input_shape): ...

        BACKBONE_REGISTRY.get("build_my_backbone")
    """

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise DuplicateRegistrationError(
                f"An object named '{name}' was already registered in '{self._name}' registry "
                f"(existing: {self._obj_map[name]!r}, new: {obj!r})."
            )
        self._obj_map[name] = obj

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``.

        Raises:
            KeyError: nothing is registered under ``name``; the message lists the names
                that are.
        """
        if name not in self._obj_map:
            available = ", ".join(sorted(self._obj_map)) or "<none>"
            key = CONFIG_KEYS.get(self._name)
            where = f" (config key {key} = {name!r})" if key else ""
            raise KeyError(
                f"No object named '{name}' found in '{self._name}' registry{where}! "
                f"Registered names: {available}."
            )
        return self._obj_map[name]
