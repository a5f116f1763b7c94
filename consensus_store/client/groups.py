"""Old import path of ``Groups`` and ``rendezvous``, now ``consensus_store.api.groups``."""
from consensus_store.api.groups import Groups, rendezvous

__all__ = ["Groups", "rendezvous"]
