"""Forked worker processes that parse large shards straight into one shared array."""

import mmap
import multiprocessing
import os
import signal
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

from ..errors import InputError

# JSON bytes in a dataset from which parsing in worker processes pays for starting them.
PARALLEL_MIN_BYTES = 32 << 20


def shared_array(shape, dtype=np.float32):
    """A zeroed array in memory shared with the processes forked after it is made.

    An anonymous shared mapping: it lives as long as the array (and any forked process that
    holds it), never has a name, and so cannot outlive an interrupted load.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not nbytes:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)


def can_fork():
    """Worker processes share memory with their parent only when started by fork."""
    return "fork" in multiprocessing.get_all_start_methods()


def _worker_main(function, tasks, counter, connection):
    """Take the next task, run it, send ``(index, ok, value)``; until none is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    while True:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        if index >= len(tasks):
            break
        try:
            result = (index, True, function(*tasks[index]))
        except InputError as err:
            result = (index, False, str(err))
        connection.send(result)
    connection.close()


class WorkerProcesses:
    """``function(*task)`` for every task, in up to ``processes`` forked worker processes.

    Tasks are taken in order by whichever worker is free. ``result(i)`` waits for task ``i``
    and returns ``(ok, value)``: the function's value, or the message of its InputError.
    Use as a context manager: leaving it (normally, on an error or on Ctrl-C) terminates and
    reaps every worker. A worker that dies (killed for memory) raises an InputError.
    """

    def __init__(self, function, tasks, processes):
        context = multiprocessing.get_context("fork")
        counter = context.Value("q", 0)
        self.results, self.workers = {}, []
        # Workers start with Ctrl-C blocked until they ignore it, so none dies of it mid-start.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _ in range(min(processes, len(tasks))):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(target=_worker_main, daemon=True,
                                          args=(function, tasks, counter, writer))
                process.start()
                writer.close()  # the worker holds the only writer: its exit reads as EOF
                self.workers.append((process, reader))
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self.close()
            raise
        self.readers = {reader: process for process, reader in self.workers}

    def result(self, index):
        while index not in self.results:
            if not self.readers:
                raise InputError("the processes parsing the JSON shards ended before finishing "
                                 "them; run again (or with fewer shards at once)")
            for reader in wait(list(self.readers)):
                try:
                    done, ok, value = reader.recv()
                except EOFError:
                    process = self.readers.pop(reader)
                    process.join()
                    if process.exitcode:
                        raise InputError(f"a process parsing JSON shards died (exit code "
                                         f"{process.exitcode}; out of memory?): free memory "
                                         f"or convert the shards to .npy") from None
                    continue
                self.results[done] = (ok, value)
        return self.results.pop(index)

    def close(self):
        for process, _reader in self.workers:
            if process.is_alive():
                process.terminate()
        for process, reader in self.workers:
            process.join()
            reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_processes(files, workers=None):
    """How many worker processes parse the JSON shards among ``files``: 0 means this one.

    ``workers=None`` uses every CPU this process may run on when the JSON shards hold at least
    ``PARALLEL_MIN_BYTES``; ``workers=1`` parses here. Never more processes than JSON shards or
    CPUs, and none where processes cannot be forked (they share the array by fork).
    """
    json_files = [f for f in files if Path(f).suffix == ".json"]
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)
    if workers is None:
        workers = cpus if sum(_size(f) for f in json_files) >= PARALLEL_MIN_BYTES else 1
    processes = min(workers, cpus, len(json_files))
    return processes if processes >= 2 and can_fork() else 0


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # the read names the fault
