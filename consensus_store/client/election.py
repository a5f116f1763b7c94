"""Old import path of ``Election``, now ``consensus_store.api.election``."""
from consensus_store.api.election import Election

__all__ = ["Election"]
