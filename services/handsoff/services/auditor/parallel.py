"""Verifying envelopes on every core: worker processes run the same `examine` the
single-process replay runs (envelope, membership, key, signature, published leaf) and hand
back what it found; the replay decodes and folds in order.

Each worker receives the region document once (pool initializer) and chunks of messages;
results come back in submission order, a bounded number of chunks in flight, so memory stays
flat however long the stream.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from types import TracebackType

import msgspec

from handsoff.federation.region import KeyTable, RegionDocument
from handsoff.services.auditor.region import StreamMessage
from handsoff.services.auditor.replay import Examined, examine

CHUNK = 512
Item = tuple[str, dict[str, str], bytes, datetime]

_worker_keys: list[KeyTable] = []  # set in each worker process by _start


def _start(region_json: bytes) -> None:
    _worker_keys.append(KeyTable(msgspec.json.decode(region_json, type=RegionDocument)))


def _examine_chunk(chunk: list[Item]) -> list[Examined]:
    keys = _worker_keys[0]
    return [examine(keys, subject, headers, data, at) for subject, headers, data, at in chunk]


class ParallelVerifier:
    """`with ParallelVerifier(region) as v: for message, examined in v.examined(messages)`."""

    def __init__(self, region: RegionDocument, workers: int | None = None) -> None:
        self.region = region
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ParallelVerifier:
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            # spawn: the caller may hold threads and an event loop, which fork would copy
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(msgspec.json.encode(self.region),),
        )
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def submit(self, chunk: list[StreamMessage]) -> Future[list[Examined]]:
        assert self._pool is not None, "use ParallelVerifier as a context manager"
        items = [(m.subject, m.headers, m.data, m.time) for m in chunk]
        return self._pool.submit(_examine_chunk, items)

    def examined(
        self, messages: Iterable[StreamMessage]
    ) -> Iterator[tuple[StreamMessage, Examined]]:
        window: deque[tuple[list[StreamMessage], Future[list[Examined]]]] = deque()
        chunk: list[StreamMessage] = []
        for m in messages:
            chunk.append(m)
            if len(chunk) == CHUNK:
                window.append((chunk, self.submit(chunk)))
                chunk = []
                if len(window) > 2 * self.workers:
                    yield from self._drain_one(window)
        if chunk:
            window.append((chunk, self.submit(chunk)))
        while window:
            yield from self._drain_one(window)

    @staticmethod
    def _drain_one(
        window: deque[tuple[list[StreamMessage], Future[list[Examined]]]],
    ) -> Iterator[tuple[StreamMessage, Examined]]:
        chunk, future = window.popleft()
        yield from zip(chunk, future.result(), strict=True)
