"""Python client and recipes.  Talks to nodes over the network only: never imports ``node`` or
``state``."""
from consensus_store.client.http import Client, RetryPolicy

__all__ = ["Client", "RetryPolicy"]
