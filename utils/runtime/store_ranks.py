"""Ranks under ``torchrun`` that meet through its key-value store, with no process group: for
vLLM, which starts a torch.distributed world of its own in each rank (docs/distributed.md,
"vLLM under torchrun")."""

import contextlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .distributed import (
    SINGLE,
    Ranks,
    launched_by_torchrun,
    mixed_devices_error,
    rank_device,
    rank_timeouts,
    share_cpu_threads,
    torchrun_place,
)

# What torchrun tells a rank about its world. vLLM reads some of them to start its own world
# (RANK, LOCAL_RANK, MASTER_ADDR...), and with TORCHELASTIC_USE_AGENT_STORE set every TCPStore
# that torch makes is a client of torchrun's store: vLLM's own rendezvous would never open.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                      "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME",
                      "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE",
                      "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                      "TORCHELASTIC_RUN_ID")

POLL_S = 0.2  # how often a waiting rank looks for the others' messages (and for a failure)
FAILED_KEY = "failed"


class PeerFailed(RuntimeError):
    """Another rank failed and left; it says why (``StoreChannel.mark_failed``)."""


@contextlib.contextmanager
def torchrun_hidden(environ=None):
    """The block runs as a plain process: ``TORCHRUN_VARIABLES`` are out of the environment
    (subprocesses started in it inherit that), and back afterwards."""
    environ = os.environ if environ is None else environ
    saved = {name: environ.pop(name) for name in TORCHRUN_VARIABLES if name in environ}
    try:
        yield saved
    finally:
        environ.update(saved)


class StoreChannel:
    """Messages between ranks through a ``torch.distributed.Store``, in rounds: every rank
    takes part in every round, in the same order, as in a collective."""

    def __init__(self, store, rank, size, timeouts):
        self.store, self.rank, self.size = store, rank, size
        self.timeout_s, self.wait_s = (limit.total_seconds() for limit in timeouts)
        self.rounds = 0

    def exchange(self, payload, patient=False):
        """Every rank's ``payload`` (bytes), in rank order. ``patient``: a long wait by design."""
        self.rounds += 1
        keys = [f"round-{self.rounds}/{rank}" for rank in range(self.size)]
        self.store.set(keys[self.rank], payload)
        self.wait_for(keys, self.wait_s if patient else self.timeout_s)
        return [self.store.get(key) for key in keys]

    def wait_for(self, keys, seconds):
        """Return once every key is set; raise ``PeerFailed`` when a rank has failed instead,
        and torch's ``DistStoreError`` after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.store.check(keys):
            if self.failed_rank() is not None:
                raise PeerFailed(f"rank {self.failed_rank()} failed")
            if time.monotonic() > deadline:
                import torch.distributed as dist

                raise dist.DistStoreError(f"no word from the other ranks after {seconds:.0f} s")
            time.sleep(POLL_S)

    def mark_failed(self):
        """Tell the ranks waiting on this one that it is leaving on a failure."""
        self.store.set(FAILED_KEY, str(self.rank))

    def failed_rank(self):
        """The rank that marked a failure (the latest), or None."""
        return int(self.store.get(FAILED_KEY)) if self.store.check([FAILED_KEY]) else None

    def first_to_say(self, key):
        """Whether this rank is the first to count ``key``."""
        return self.store.add(key, 1) == 1

    def leave(self):
        """The end of the run: rank 0 may host the store, so it goes last, once every other
        rank has read its last message."""
        if self.rank:
            self.store.set(f"left/{self.rank}", b"1")
        else:
            self.wait_for([f"left/{rank}" for rank in range(1, self.size)], self.wait_s)


@dataclass(frozen=True)
class StoreRanks(Ranks):
    """``Ranks`` whose host-side collectives go through a ``StoreChannel``: no process group
    exists in the process. Messages are bytes in the store, suited to the small ones of a
    plan and its outcome, not to bulk data."""

    channel: StoreChannel = field(default=None, compare=False, repr=False)

    def gather_arrays(self, array, patient=False):
        array = np.ascontiguousarray(array)
        parts = self.channel.exchange(array.tobytes(), patient)
        return np.concatenate([np.frombuffer(part, dtype=array.dtype).reshape(-1, *array.shape[1:])
                               for part in parts])

    def gather_fixed(self, array, device="cpu"):
        return self.gather_arrays(np.ascontiguousarray(array)[None])

    def broadcast(self, array, src, device="cpu"):
        return self.gather_arrays(np.ascontiguousarray(array)[None])[src]

    def leave(self):
        self.channel.leave()


_JOINED = {}  # this process's channel, for the CLI's error handler (as torch keeps its group)


def joined_channel():
    """The ``StoreChannel`` this process joined the ranks by, or None."""
    return _JOINED.get("channel")


def start_store_ranks(gpu_id=None, notify=None, pinned=False):
    """``start_ranks`` without a process group: ``(ranks, device)``, the ranks meeting through
    torchrun's rendezvous store (the one ``init_process_group`` would use). The device is
    ``rank_device``'s, and CUDA is not touched here: vLLM takes the first GPU it sees."""
    from .device import resolve_device

    if not launched_by_torchrun():
        return SINGLE, resolve_device(gpu_id, notify, fork_safe=True)
    rank, size, local_rank, local_size = torchrun_place()
    device = rank_device(gpu_id, local_rank, notify if rank == 0 else None, pinned, local_size,
                         fork_safe=True)
    share_cpu_threads()
    import torch.distributed as dist

    timeouts = rank_timeouts()
    store, _rank, _size = next(dist.rendezvous("env://", timeout=timeouts[0]))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # a restart starts afresh
    channel = StoreChannel(dist.PrefixStore(f"novelsum/{attempt}/", store), rank, size,
                           timeouts)
    _JOINED["channel"] = channel
    ranks = StoreRanks(rank, size, local_rank, local_size, grouped=True, channel=channel)
    ranks.agree(mixed_devices_error(ranks.gather_objects(device), gpu_id))
    return ranks, device
