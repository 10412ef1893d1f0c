"""Ranks under ``torchrun``: row blocks per rank, collectives, agreed failures (docs/method.md
section 9)."""

import contextlib
import os
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from ..errors import InputError
from .device import cpu_threads, cuda_device_count

RANK_TIMEOUT_VARIABLE = "NOVELSUM_RANK_TIMEOUT_S"


DEFAULT_RANK_TIMEOUT_S = 1800  # a collective of the computation that waits longer: a rank is stuck


WAIT_TIMEOUT_VARIABLE = "NOVELSUM_RANK_WAIT_S"


# Waits that are long by design (a rank with fewer shards to embed waiting for the others, the
# ranks waiting for rank 0 to compute metrics or write): a rank that dies is seen by torchrun,
# which stops the others, so this only bounds a rank that hangs while alive.
DEFAULT_WAIT_TIMEOUT_S = 7 * 24 * 3600


class RankError(InputError):
    """Another rank (or this one) failed in a phase: every rank raises the same message."""


class CollectiveFailed(RuntimeError):
    """A collective among the ranks failed (a peer gone, a timeout): raised by ``Ranks``'
    collectives in place of the backend's error (gloo and NCCL raise plain RuntimeErrors),
    which stays its ``__cause__``."""


@contextlib.contextmanager
def collective():
    """Wrap one torch.distributed collective: its failure becomes ``CollectiveFailed``; the
    device running out of memory stays what it is."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        raise CollectiveFailed(str(err)) from err


def row_split(n, size):
    """Contiguous, balanced blocks ``[(start, stop)]`` of ``range(n)``, one per rank: the first
    ``n % size`` ranks get one row more. A rank may get no rows when ``n < size``."""
    base, extra = divmod(n, size)
    bounds = [0]
    for rank in range(size):
        bounds.append(bounds[-1] + base + (1 if rank < extra else 0))
    return list(zip(bounds, bounds[1:]))


def owner_of(index, blocks):
    """The rank whose block holds global row ``index``."""
    # Empty blocks (fewer rows than ranks) come last and start at n, past every index.
    starts = np.asarray([start for start, _stop in blocks])
    return int(np.searchsorted(starts, index, side="right") - 1)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks: ``rank`` of ``size``, ``local_rank`` of
    ``local_size`` on its node. ``size == 1`` without a process group is a plain run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    grouped: bool = False  # joined to other ranks (a process group, or a store)
    # NCCL group for tensors on the ranks' GPUs (None on the CPU); gloo group for long waits
    device_group: object = field(default=None, compare=False, repr=False)
    patient_group: object = field(default=None, compare=False, repr=False)

    @property
    def is_main(self):
        return self.rank == 0

    def block(self, n):
        """This rank's rows ``(start, stop)`` of a dataset of ``n`` rows."""
        return row_split(n, self.size)[self.rank]

    def blocks(self, n):
        return row_split(n, self.size)

    def describe(self):
        """``"2 ranks"`` or ``"1 process"``, for summary lines."""
        return f"{self.size} rank{'s' if self.size != 1 else ''}" if self.grouped else \
            "1 process"

    # Collectives. Host-side (numpy in, numpy out, gloo); with one process they are the identity.

    def _carrier(self, device):
        """Where a message on ``device`` travels: the NCCL group for GPU tensors when the ranks
        are on GPUs, else the host (the default gloo group)."""
        if device != "cpu" and self.device_group is not None:
            return device, self.device_group
        return "cpu", None

    def gather_arrays(self, array, patient=False):
        """Every rank's ``array`` (same dtype and trailing shape, any number of rows),
        concatenated in rank order, on every rank. ``patient``: a wait that may last long."""
        array = np.ascontiguousarray(array)
        if not self.grouped:
            return array
        import torch
        import torch.distributed as dist

        group = self.patient_group if patient else None
        counts = torch.zeros(self.size, dtype=torch.int64)
        counts[self.rank] = len(array)
        with collective():
            dist.all_reduce(counts, group=group)
        # Sent as bytes: one path for every dtype (gloo has no bool or void tensors).
        row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
        padded = torch.zeros((int(counts.max()), row_bytes), dtype=torch.uint8)
        if len(array):
            padded[:len(array)] = torch.from_numpy(
                array.reshape(len(array), -1).view(np.uint8).reshape(len(array), row_bytes).copy())
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        with collective():
            dist.all_gather(parts, padded, group=group)
        rows = np.concatenate([part[:int(c)].numpy() for part, c in zip(parts, counts)])
        return rows.view(array.dtype).reshape(len(rows), *array.shape[1:])

    def gather_fixed(self, array, device="cpu"):
        """Every rank's ``array`` of one shape known to all (numbers), stacked in rank order:
        one collective, for the selection's every step. ``device``: where the message travels
        (a CUDA device: over NCCL)."""
        array = np.ascontiguousarray(array)
        if not self.grouped:
            return array[None]
        import torch
        import torch.distributed as dist

        device, group = self._carrier(device)
        mine = torch.from_numpy(array.copy()).to(device)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        with collective():
            dist.all_gather(parts, mine, group=group)
        return torch.stack(parts).cpu().numpy()

    def broadcast(self, array, src, device="cpu"):
        """Rank ``src``'s ``array`` on every rank; the others pass an array of the same shape
        and dtype to receive into. One collective."""
        array = np.ascontiguousarray(array)
        if not self.grouped:
            return array
        import torch
        import torch.distributed as dist

        device, group = self._carrier(device)
        tensor = torch.from_numpy(array.copy()).to(device)
        with collective():
            dist.broadcast(tensor, src, group=group)
        return tensor.cpu().numpy()

    def gather_objects(self, value, patient=False):
        """Every rank's ``value`` (JSON-able: numbers, strings, lists, dicts), in rank order."""
        if not self.grouped:
            return [value]
        import json

        data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
        counts = self.gather_arrays(np.asarray([len(data)], dtype=np.int64), patient)
        joined = self.gather_arrays(data, patient).tobytes()
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [json.loads(joined[a:b]) for a, b in zip(bounds, bounds[1:])]

    def sum_float64(self, value):
        """The sum over ranks of a float, in float64, added in rank order (deterministic)."""
        return float(np.sum(self.gather_arrays(np.asarray([value], dtype=np.float64))))

    def agree(self, error=None, patient=False):
        """Exchange whether each rank failed; if any did, raise the first failure on every rank.

        ``error``: this rank's ``InputError`` or None. The lowest failing rank's message is
        raised: ranks hold rows in order, so that is the first fault in row order, the one a
        single process reports. A failure particular to one rank says which in its message.
        """
        if not self.grouped:
            if error is not None:
                raise error
            return
        messages = self.gather_objects(None if error is None else str(error), patient)
        failed = [(rank, text) for rank, text in enumerate(messages) if text is not None]
        if not failed:
            return
        _rank, text = failed[0]
        raise RankError(text) from None

    @contextlib.contextmanager
    def phase(self, patient=False):
        """Run a block on every rank, then agree: an ``InputError`` on any rank is raised on all.
        ``patient``: some ranks may reach the end much later than others (work on one rank
        only, or shared out unevenly): the wait is bounded by ``WAIT_TIMEOUT_VARIABLE``."""
        error = None
        try:
            yield
        except InputError as err:
            if not self.grouped:
                raise
            error = err
        self.agree(error, patient)

    def leave(self):
        """Leave the process group, if this process joined one."""
        if self.grouped:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


SINGLE = Ranks()


def launched_by_torchrun(environ=None):
    """Whether this process was started by ``torchrun`` (it sets ``WORLD_SIZE`` and ``RANK``)."""
    environ = os.environ if environ is None else environ
    return "WORLD_SIZE" in environ and "RANK" in environ


def rank_device(gpu_id, local_rank, notify=None, pinned=False, local_size=1, fork_safe=False):
    """The device of the rank with ``local_rank`` on its node, under ``torchrun``.

    ``--gpu_id`` is the node's first GPU to use (default 0): local rank r takes GPU
    ``gpu_id + r``. ``-1`` (or a node without GPUs) puts every rank on the CPU. A node with
    too few GPUs for its ranks is refused, rather than two ranks sharing one GPU.
    ``pinned``: the rank has already made GPU ``gpu_id + r`` the only one it sees
    (``utils.runtime.device.pin_visible_gpu``, for vLLM), so it takes ``cuda:0`` of that view.
    """
    if gpu_id is not None and gpu_id < 0:
        return "cpu"
    count = cuda_device_count(fork_safe)
    first = 0 if gpu_id is None else gpu_id
    if count == 0:
        if gpu_id is not None and notify is not None:
            notify(f"GPU {gpu_id} requested but no CUDA device is available; every rank runs "
                   f"on the CPU")
        return "cpu"
    if pinned:
        return "cuda:0"
    # Checked for the node's last rank on every rank, so that all refuse alike (rank 0 says
    # it) before any process group exists, rather than one rank failing alone.
    if first + max(local_size, local_rank + 1) > count:
        last = first + max(local_size, local_rank + 1) - 1
        raise InputError(f"--gpu_id {first}: {max(local_size, local_rank + 1)} ranks on this "
                         f"node would use GPUs {first} to {last} but it has {count}; start at "
                         f"most {max(count - first, 0)} process(es) per node (torchrun "
                         f"--nproc_per_node) or use --gpu_id -1 for the CPU")
    return f"cuda:{first + local_rank}"


def torchrun_place(environ=None):
    """``(rank, size, local_rank, local_size)`` from the variables ``torchrun`` sets."""
    environ = os.environ if environ is None else environ
    size = int(environ["WORLD_SIZE"])
    return (int(environ["RANK"]), size, int(environ.get("LOCAL_RANK", 0)),
            int(environ.get("LOCAL_WORLD_SIZE", size)))


def rank_timeouts(environ=None):
    """``(timeout, wait)``: how long a collective of the computation, and a wait that is long
    by design, may last (``RANK_TIMEOUT_VARIABLE``, ``WAIT_TIMEOUT_VARIABLE``)."""
    environ = os.environ if environ is None else environ
    return (timedelta(seconds=float(environ.get(RANK_TIMEOUT_VARIABLE, DEFAULT_RANK_TIMEOUT_S))),
            timedelta(seconds=float(environ.get(WAIT_TIMEOUT_VARIABLE, DEFAULT_WAIT_TIMEOUT_S))))


def share_cpu_threads():
    """Give this rank its share of the node's CPU threads (``cpu_threads``)."""
    threads = cpu_threads()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))  # read when numba is first imported
    import torch

    torch.set_num_threads(threads)


def start_ranks(gpu_id=None, notify=None, host_only=False):
    """Join the ranks when launched by ``torchrun`` and pick this rank's device.

    Returns ``(ranks, device)``. Without ``torchrun``: ``SINGLE`` and ``resolve_device``'s
    choice. With it: a gloo process group and a patient gloo group; ranks on GPUs and CPUs at
    once refused; an NCCL group when every rank has a GPU, unless ``host_only`` (only
    host-side messages then); this rank on GPU ``LOCAL_RANK`` (``rank_device``), and its share
    of the node's CPU threads. ``notify`` hears of a fallback to the CPU (rank 0 only).
    ``utils.runtime.store_ranks`` joins ranks without a process group, for vLLM.
    """
    from .device import resolve_device

    if not launched_by_torchrun():
        return SINGLE, resolve_device(gpu_id, notify)
    rank, size, local_rank, local_size = torchrun_place()
    device = rank_device(gpu_id, local_rank, notify if rank == 0 else None,
                         local_size=local_size)
    share_cpu_threads()
    import torch
    import torch.distributed as dist

    if device != "cpu":
        torch.cuda.set_device(torch.device(device))
    timeout, wait = rank_timeouts()
    # The default group is gloo on every rank, so that the ranks can first agree on their
    # devices; NCCL joins only when every rank has a GPU.
    dist.init_process_group("gloo", timeout=timeout)
    patient_group = dist.new_group(backend="gloo", timeout=wait)
    ranks = Ranks(rank, size, local_rank, local_size, grouped=True,
                  patient_group=patient_group)
    ranks.agree(mixed_devices_error(ranks.gather_objects(device), gpu_id))
    if device != "cpu" and not host_only:
        ranks = Ranks(rank, size, local_rank, local_size, grouped=True,
                      device_group=dist.new_group(backend="nccl", timeout=timeout),
                      patient_group=patient_group)
    return ranks, device


def mixed_devices_error(devices, gpu_id):
    """An ``InputError`` when some ranks would run on GPUs and others on the CPU (a node
    without GPUs, or a pinned GPU this node lacks), else None: ``devices`` in rank order."""
    on_cpu = [str(rank) for rank, device in enumerate(devices) if device == "cpu"]
    if on_cpu and len(on_cpu) < len(devices):
        return InputError(f"--gpu_id {gpu_id or 0}: rank(s) {', '.join(on_cpu)} found no GPU "
                          f"of their own (GPU --gpu_id + LOCAL_RANK) while the others run on "
                          f"GPUs; start at most one process per GPU (torchrun --nproc_per_node) "
                          f"or use --gpu_id -1 for the CPU")
    return None


def stop_ranks(ranks):
    """Leave the ranks (at the end of a run, on every rank): ``Ranks.leave``."""
    ranks.leave()


def block_starts(ranks, rows):
    """Every rank's first global row, and the total, from each rank's row count ``rows``:
    (size + 1,) int64, rank r holding rows ``starts[r]:starts[r + 1]``."""
    counts = ranks.gather_arrays(np.asarray([rows], dtype=np.int64))
    return np.concatenate([[0], np.cumsum(counts)])
