"""Old import path of ``wait_for_change``, now ``consensus_store.api.watching``."""
from consensus_store.api.watching import wait_for_change

__all__ = ["wait_for_change"]
