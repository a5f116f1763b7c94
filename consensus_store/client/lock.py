"""Old import path of ``Lock`` and ``trans``, now ``consensus_store.api.lock``."""
from consensus_store.api.lock import Lock, trans

__all__ = ["Lock", "trans"]
