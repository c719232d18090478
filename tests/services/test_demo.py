"""`handsoff demo --no-serve`: a whole region runs end to end, and the regional figures it
prints equal a recomputation from the five nodes' own logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from handsoff.federation.policy import SharePolicy
from handsoff.federation.pseudonyms import Pseudonymiser
from handsoff.federation.region import load_region
from handsoff.federation.statements import Inputs
from handsoff.services.aggregator import release
from handsoff.services.aggregator.disclosure import SuppressionMemory
from handsoff.services.aggregator.indicators import Ledger, compute
from handsoff.services.aggregator.summary import region_lines
from handsoff.services.demo import PARTNERS
from handsoff.services.node.node import Node
from handsoff.services.node.outbox import LogSource


def recompute(root: Path) -> list[str]:
    """The demo's regional table, from the nodes' logs through the share policy."""
    passphrase = (root / "demo-passphrase").read_bytes()
    doc = load_region(root / "region.json").document
    ledger = Ledger()
    for partner, _, _ in PARTNERS:
        node = Node.open(root / partner, passphrase)
        try:
            policy = SharePolicy(partner, Pseudonymiser(node.pseudonym_key))
            number = 0
            for c in LogSource(node.cases).changes_after(0, 1_000_000):
                for shared in policy.process(c.case_id, c.change):
                    number += 1
                    ledger.add(partner, number, shared)
        finally:
            node.close()
    header = release.ReleaseHeader(
        region=doc.region,
        region_version=doc.version,
        aggregator=doc.aggregator.id,
        release=1,
        k=5,
        breakdowns=doc.breakdowns,
        as_of=None,
        inputs=Inputs(stream="-", first_seq=1, last_seq=0, accepted=0, commitment="-"),
    )
    countries = sorted({p.country for p in doc.partners})
    made = release.build(compute(ledger), header, countries, SuppressionMemory())
    return region_lines(made.statements)


def test_demo_figures_equal_a_recomputation_from_the_logs(tmp_path: Path) -> None:
    handsoff = Path(sys.executable).with_name("handsoff")
    done = subprocess.run(
        [str(handsoff), "demo", "--no-serve", "--incidents", "60", "--seed", "7",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "  result: intact" in done.stdout
    # The clean region the demo built audits clean, end to end.
    assert "    audit of region sadc-demo: OK" in done.stdout
    assert "aggregate statements: 14 signed by the aggregator, verified" in done.stdout
    for partner, _, _ in PARTNERS:
        assert f"  {partner}: intact" in done.stdout
    assert "dashboard: http://127.0.0.1:" in done.stdout
    lines = recompute(tmp_path)
    assert len(lines) > 3
    for line in lines:
        assert "  " + line in done.stdout, line
    # Nothing is left running: the demo's nats-server has stopped.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(tmp_path) not in ps.stdout


def test_demo_serves_until_ctrl_c_then_stops_everything(tmp_path: Path) -> None:
    import signal
    import time

    handsoff = Path(sys.executable).with_name("handsoff")
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [str(handsoff), "demo", "--incidents", "10", "--dir", str(tmp_path / "demo")],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
        try:
            deadline = time.monotonic() + 240
            while "serving until Ctrl-C" not in log.read_text():
                assert demo.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the demo never started serving"
                time.sleep(0.2)
            url = next(
                line.split(" ", 1)[1] for line in log.read_text().splitlines()
                if line.startswith("dashboard: ")
            )
            import urllib.request

            with urllib.request.urlopen(url) as page:
                assert page.status == 200
            demo.send_signal(signal.SIGINT)  # Ctrl-C
            assert demo.wait(timeout=60) == 0, log.read_text()
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
    assert "stopping" in log.read_text()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(tmp_path) not in ps.stdout  # its nats-server is gone too
