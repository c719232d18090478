"""Runs the aggregator until it has released the whole stream, or SIGKILLs itself at a
chosen point (for test_aggregator_faults.py).

    python aggregator_worker.py DIR NATS_URL MODE N
        MODE mid-batch     die while verifying the N-th message of this run
             after-commit  die after the N-th batch is committed, before its acks
             mid-release   die after the N-th release is kept, before it is published
             announced     die after the N-th announcement of the region version taken is
                           published (and acknowledged), before it is recorded
             none          run to the end and exit 0
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: support.py

from handsoff.services.aggregator import ingest as ingest_module
from handsoff.services.aggregator.announce import TakenBook
from handsoff.services.aggregator.ingest import IngestStore
from handsoff.services.aggregator.releases import ReleaseBook
from handsoff.services.aggregator.service import (
    Aggregator,
    AggregatorConfig,
    AggregatorPaths,
    connect,
    open_key,
    take_region,
)
from support import PASSPHRASE


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(mode: str, n: int) -> None:
    calls = {"count": 0}

    def counted(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls["count"] += 1
            before = mode in ("mid-batch", "announced")
            if before and calls["count"] == n:
                die()
            result = original(*args, **kwargs)
            if not before and calls["count"] == n:
                die()
            return result

        return wrapper

    if mode == "mid-batch":
        ingest_module.envelope.open_message = counted(ingest_module.envelope.open_message)  # type: ignore[attr-defined]
    elif mode == "after-commit":
        IngestStore.record = counted(IngestStore.record)  # type: ignore[method-assign]
    elif mode == "mid-release":
        ReleaseBook.keep = counted(ReleaseBook.keep)  # type: ignore[method-assign]
    elif mode == "announced":
        TakenBook.record = counted(TakenBook.record)  # type: ignore[method-assign]


async def run(directory: Path, url: str) -> None:
    config = AggregatorConfig(
        dir=directory,
        nats_url=url,
        nats_user=None,
        release_interval=0.0,
        batch=16,
        fetch_timeout=0.2,
    )
    region = take_region(AggregatorPaths(directory), None)
    store = IngestStore(AggregatorPaths(directory).store)
    nc = await connect(config)
    try:
        js = nc.jetstream()
        from handsoff.federation import subjects

        end = (await js.stream_info(subjects.events_stream(region.region))).state.last_seq
        from handsoff.services.auditor.region import read_all

        stream = subjects.checkpoints_stream(region.region)
        # the last checkpoint (cosignatures, in the same stream, come after it)
        held = await read_all(js, stream, subjects.all_checkpoints(region.region))
        checkpoints_end = max((m.seq for m in held), default=0)
        aggregator = Aggregator(region, open_key(directory, PASSPHRASE), store, nc, config)
        await aggregator.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            await aggregator.step()
            state = aggregator.book.state()
            witness = aggregator.witness.status()
            witnessed = (
                int(witness["position"]) >= checkpoints_end  # type: ignore[call-overload]
                and witness["waiting"] == 0
                and witness["unpublished"] == 0
            )
            if (
                state is not None
                and state.last_seq == end
                and state.published == state.release
                and witnessed
            ):
                break
            assert loop.time() < deadline, "the aggregator did not finish"
        await aggregator.stop()
    finally:
        await nc.drain()
        store.close()


if __name__ == "__main__":
    arm(sys.argv[3], int(sys.argv[4]))
    asyncio.run(run(Path(sys.argv[1]), sys.argv[2]))
