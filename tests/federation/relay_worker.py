"""Runs one node's relay in its own process, for crash tests.

    python relay_worker.py DIR NATS_URL KILL_AT

KILL_AT > 0: the process SIGKILLs itself after the KILL_AT-th batch was acknowledged by
JetStream and before its position was committed. It exits 0 once the relay has caught up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink
from handsoff.services.node.node import Node

PASSPHRASE = b"correct horse battery staple"


async def main(directory: Path, url: str, kill_at: int) -> int:
    node = Node.open(directory, PASSPHRASE)
    link = NodeLink(node, FederationSettings(nats_url=url, nats_user="x", publish_interval=0))
    link.relay.settings.batch = 3
    batches = 0

    def maybe_die() -> None:
        nonlocal batches
        batches += 1
        if batches == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    link.relay.after_publish = maybe_die
    await link.start()
    try:
        while True:
            status = link.status()
            if status.relay_lag == 0 and status.relay_position > 0:
                return 0
            await asyncio.sleep(0.02)
    finally:
        await link.stop()
        node.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
