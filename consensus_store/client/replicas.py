"""Old import path of ``Replicas``, now ``consensus_store.api.replicas``."""
from consensus_store.api.replicas import MODELS, Replicas

__all__ = ["MODELS", "Replicas"]
