"""lineguard.runtime: the edge side. Loads a bundle and inspects frames; never imports torch or export/.

Usage::

    from lineguard.runtime import Inspector
    verdict = Inspector("bundles/default").inspect(frame_bgr, product="tile")
"""

from lineguard.runtime.scoring.inspector import Inspection, Inspector, UnknownProductError

__all__ = ["Inspection", "Inspector", "UnknownProductError"]
