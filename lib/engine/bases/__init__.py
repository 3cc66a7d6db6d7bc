"""Base networks: the plug-ins the engine runs (G-FRTM, TTVOS, G-TTVOS), one module each.

A base network is a :class:`~lib.engine.bases.base.BaseNetwork` subclass decorated with
:func:`~lib.engine.bases.base.register`, imported here; the engine picks the one whose ``model_type`` its model is
(:func:`base_class_for`), so a checkpoint's model alone decides which base runs.
"""

# the built-in bases register themselves on import (order: gfrtm, ttvos, gttvos)
from lib.engine.bases import gfrtm, ttvos, gttvos  # noqa: E402,F401,I001
from lib.engine.bases.base import BaseNetwork, base_class_for, base_names, register

__all__ = ["BaseNetwork", "base_class_for", "base_names", "register"]
