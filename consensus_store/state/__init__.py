"""The replicated state machine: pure and deterministic.

Owns: the command format (``commands``) and what applying a command does (``machine``).
Must not import pysyncobj, sockets, clocks, randomness or the environment; time and ids arrive
as command fields stamped once by the proposer.  Depends only on ``errors``.
"""
from consensus_store.state.commands import (COMMAND_VERSION, decode_command, encode_batch,
                                            encode_command)
from consensus_store.state.machine import StateMachine

__all__ = ["COMMAND_VERSION", "StateMachine", "decode_command", "encode_batch", "encode_command"]
