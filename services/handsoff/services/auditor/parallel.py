"""Checking envelopes on every core: worker processes run the same `examine` the
single-process replay runs (envelope, membership, key validity, signature, published leaf)
and hand back what it found; the replay decodes and folds in stream order.

Chunks go to the workers in turn, QUEUED of them per worker (a worker's next chunk goes
out before its answers are folded, so it never waits on the fold), and come back in the
order sent, so memory stays flat however long the stream. Messages and findings cross the
process boundary as msgpack (msgspec): several times cheaper than pickling, which matters
when a signature check is only ~50 us.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType

import msgspec

from handsoff.federation.history import RegionHistory
from handsoff.federation.region import RegionDocument
from handsoff.services.auditor import examine
from handsoff.services.auditor.region import StreamMessage
from handsoff.services.errors import ServiceError

CHUNK = 200
QUEUED = 2  # chunks per worker; two fit a socket buffer, so a send never waits on one


class WorkerLost(ServiceError):
    """A verifying worker process ended before answering (killed, out of memory)."""


class ParallelVerifier:
    """`with ParallelVerifier(region, workers) as v: for message, examined in v.examined(...)`.

    `workers` processes examine; this one only folds. Each worker has two chunks queued, so
    it never waits while this process folds what it sent back.
    """

    def __init__(self, region: RegionDocument | RegionHistory, workers: int | None = None) -> None:
        # each message judged by the version announced for it, or the one in force
        self.region = RegionHistory.of(region)
        self.workers = workers or os.cpu_count() or 1
        self._pipes: list[Connection] = []
        self._processes: list[BaseProcess] = []
        self._queued: deque[tuple[list[StreamMessage], int]] = deque()  # in the order sent
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(list[examine.Examined]).decode

    def __enter__(self) -> ParallelVerifier:
        # spawn: the caller may hold threads and an event loop, which fork would copy
        context = multiprocessing.get_context("spawn")
        region_json = self.region.encode()
        for _ in range(self.workers):
            mine, theirs = context.Pipe()
            process = context.Process(target=examine.serve, args=(theirs, region_json), daemon=True)
            process.start()
            theirs.close()
            self._pipes.append(mine)
            self._processes.append(process)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # that worker is gone already
                pipe.send_bytes(b"")
            pipe.close()
        # The answers are in: an interpreter's teardown (~0.1 s) need not hold up the report.
        threading.Thread(target=_reap, args=(self._processes,), daemon=True).start()
        self._pipes, self._processes = [], []
        self._queued.clear()

    def examined(
        self, messages: Iterable[StreamMessage]
    ) -> Iterator[tuple[StreamMessage, examine.Examined]]:
        for chunk in _chunks(messages):
            yield from self.feed(chunk)
        yield from self.flush()

    def feed(self, chunk: list[StreamMessage]) -> list[tuple[StreamMessage, examine.Examined]]:
        """Hands `chunk` to a worker; returns the oldest chunk's answers (in stream order)
        once every worker has QUEUED chunks, else nothing yet. A worker's next chunk goes
        out before its answers are folded, so it never waits on the fold."""
        assert self._pipes, "use ParallelVerifier as a context manager"
        done: list[tuple[StreamMessage, examine.Examined]] = []
        if len(self._queued) == QUEUED * len(self._pipes):
            oldest, worker = self._queued.popleft()
            found = self._receive(worker)
            self._send(worker, chunk)
            done = list(zip(oldest, found, strict=True))
        else:
            busy = [w for _, w in self._queued]
            self._send(min(range(len(self._pipes)), key=busy.count), chunk)
        return done

    def flush(self) -> Iterator[tuple[StreamMessage, examine.Examined]]:
        """The answers to every chunk still queued, in stream order."""
        while self._queued:
            chunk, worker = self._queued.popleft()
            yield from zip(chunk, self._receive(worker), strict=True)

    def _send(self, worker: int, chunk: list[StreamMessage]) -> None:
        items = [(m.subject, m.headers, m.data, m.time, m.seq) for m in chunk]
        try:
            self._pipes[worker].send_bytes(self._encode(items))
        except OSError:
            raise self._lost(worker) from None
        self._queued.append((chunk, worker))

    def _receive(self, worker: int) -> list[examine.Examined]:
        try:
            return self._decode(self._pipes[worker].recv_bytes())
        except (EOFError, OSError):
            raise self._lost(worker) from None

    def _lost(self, worker: int) -> WorkerLost:
        process = self._processes[worker]
        process.join(timeout=1)
        return WorkerLost(
            f"verifying worker {worker} ended (exit code {process.exitcode}): out of memory, "
            "or killed? The audit stops; run it again (--workers 1 runs in one process)"
        )


def _reap(processes: list[BaseProcess]) -> None:
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()


def _chunks(messages: Iterable[StreamMessage]) -> Iterator[list[StreamMessage]]:
    chunk: list[StreamMessage] = []
    for m in messages:
        chunk.append(m)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
