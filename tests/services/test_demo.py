"""`handsoff demo --no-serve`: runs end to end and prints figures that match the logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from handsoff.services.figures import headline, render
from handsoff.services.node.node import Node


def test_demo_figures_equal_a_recomputation_from_the_log(tmp_path: Path) -> None:
    handsoff = Path(sys.executable).with_name("handsoff")
    done = subprocess.run(
        [
            str(handsoff),
            "demo",
            "--no-serve",
            "--incidents",
            "40",
            "--seed",
            "7",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verification with public keys only: intact" in done.stdout
    assert "Traceback" not in done.stderr

    node = Node.open(tmp_path / "demo-bw", (tmp_path / "demo-passphrase").read_bytes())
    try:
        # Recompute from the stored events, each case read afresh and verified.
        ids = {n.originator_id for n in node.cases.recorder.select_notifications(0, 100_000)}
        states = [node.cases.history(case_id)[0] for case_id in ids]
    finally:
        node.close()
    assert len(states) == 40
    for line in render(headline(states)):
        assert "  " + line in done.stdout
