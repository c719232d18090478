"""Checking envelopes on every core: worker processes run the same `examine` the
single-process replay runs (envelope, membership, key validity, signature, published leaf)
and hand back what it found; the replay decodes and folds in stream order.

Chunks go to the workers in turn, one chunk in flight per worker, and come back in the
order sent, so memory stays flat however long the stream. Messages and findings cross the
process boundary as msgpack (msgspec): several times cheaper than pickling, which matters
when a signature check is only ~50 us.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
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

CHUNK = 200
QUEUED = 2  # chunks per worker; two fit a socket buffer, so a send never waits on one


class WorkerLost(RuntimeError):
    """A verifying worker process ended before answering (killed, out of memory)."""


class ParallelVerifier:
    """`with ParallelVerifier(region, workers) as v: for message, examined in v.examined(...)`.

    `workers` processes examine; this one only folds. Each worker has two chunks queued, so
    it never waits while this process folds what it sent back.
    """

    def __init__(self, region: RegionDocument | RegionHistory, workers: int | None = None) -> None:
        self.region = RegionHistory.of(region)  # each message judged by the version in force
        self.workers = workers or os.cpu_count() or 1
        self._pipes: list[Connection] = []
        self._processes: list[BaseProcess] = []
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
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        self._pipes, self._processes = [], []

    def examined(
        self, messages: Iterable[StreamMessage]
    ) -> Iterator[tuple[StreamMessage, examine.Examined]]:
        assert self._pipes, "use ParallelVerifier as a context manager"
        chunks = _chunks(messages)
        queued: deque[tuple[list[StreamMessage], int]] = deque()  # in the order sent
        for worker in [*range(len(self._pipes))] * QUEUED:
            chunk = next(chunks, None)
            if chunk is None:
                break
            self._send(worker, chunk)
            queued.append((chunk, worker))
        while queued:
            chunk, worker = queued.popleft()
            found = self._receive(worker)
            following = next(chunks, None)  # sent before this one is folded
            if following is not None:
                self._send(worker, following)
                queued.append((following, worker))
            yield from zip(chunk, found, strict=True)

    def _send(self, worker: int, chunk: list[StreamMessage]) -> None:
        items = [(m.subject, m.headers, m.data, m.time) for m in chunk]
        self._pipes[worker].send_bytes(self._encode(items))

    def _receive(self, worker: int) -> list[examine.Examined]:
        try:
            return self._decode(self._pipes[worker].recv_bytes())
        except (EOFError, OSError):
            code = self._processes[worker].exitcode
            raise WorkerLost(f"verifying worker {worker} ended (exit code {code})") from None


def _chunks(messages: Iterable[StreamMessage]) -> Iterator[list[StreamMessage]]:
    chunk: list[StreamMessage] = []
    for m in messages:
        chunk.append(m)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
