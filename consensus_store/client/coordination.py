"""Old import path of the coordination calls, now ``consensus_store.api.coordination``
(``CoordinationMixin`` is ``CoordinationApi``); kept so existing imports keep working."""
from consensus_store.api.coordination import DEFAULT_SESSION_TTL_S, CoordinationApi

CoordinationMixin = CoordinationApi

__all__ = ["DEFAULT_SESSION_TTL_S", "CoordinationMixin"]
