"""The exception type raised by the core's structures for invalid user input.

detectron2 guards these inputs with bare ``assert`` statements, so code written for it may catch
``AssertionError``; code written in the core's style catches ``ValueError``. ``StructureError``
is both, so either handler keeps working.
"""


class StructureError(ValueError, AssertionError):
    """Invalid input to a structure (wrong shape, length mismatch, unsupported mode, ...)."""
