"""Old import path of ``Session``, now ``consensus_store.api.session``."""
from consensus_store.api.session import RETRY_PAUSE_S, Listener, Session

__all__ = ["RETRY_PAUSE_S", "Listener", "Session"]
