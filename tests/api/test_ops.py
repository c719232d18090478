"""The node's operations endpoints: /healthz and /readyz answer without a token, /metrics
with a token of any role; the counters move when events are recorded and relayed; no
personal data, case id or user name ever appears in what they answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from handsoff.services.api import create_app
from handsoff.services.natsserver import EmbeddedNats
from handsoff.services.node.config import FederationSettings
from handsoff.services.node.link import NodeLink, join_region
from handsoff.services.node.node import Node
from relay_support import record_stories
from support import RegionKit, create_region_streams

TIMEOUT = 30.0
LOGS = ("cases", "admin", "inbound")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client: TestClient, headers: dict[str, str]) -> dict[Any, float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


def recorded(metrics: dict[Any, float], log: str) -> float:
    return metrics[("handsoff_node_events_recorded_total", (("log", log),))]


def wait_until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_probes_answer_without_a_token(client: TestClient) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "ready": True,
        "stores": {"cases": True, "admin": True, "inbound": True},
        "link": "not configured",
    }


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("no token", 401),
        ("wrong token", 401),
        ("paralegal", 200),
        ("supervisor", 200),
        ("auditor", 200),
        ("admin", 200),
    ],
)
def test_metrics_needs_a_token_of_any_role(
    client: TestClient, principals: Any, who: str, status: int
) -> None:
    r = client.get("/metrics", headers=principals.headers(who))
    assert r.status_code == status, r.text
    if status == 401:
        assert "handsoff_" not in r.text
        assert r.headers["www-authenticate"] == "Bearer"


def test_metrics_count_what_is_recorded(
    client: TestClient, principals: Any, lifecycle: Any, node: Node
) -> None:
    h = principals.headers
    before = scrape(client, h("auditor"))
    assert before[("handsoff_node_info", (("partner", node.config.partner),))] == 1
    assert before[("handsoff_node_link_configured", ())] == 0
    assert recorded(before, "cases") == 0
    assert recorded(before, "admin") == 1 + 4  # initialised, then one user per role
    assert recorded(before, "inbound") == 0
    assert ("process_start_time_seconds", ()) in before  # the process's own figures

    r = client.post(
        "/cases", json=msgspec.to_builtins(lifecycle.incident()), headers=h("paralegal")
    )
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    r = client.post(
        f"/cases/{case_id}/first-response",
        json=lifecycle.body(1, "first-response"),
        headers=h("paralegal"),
    )
    assert r.status_code == 200, r.text
    assert (
        client.post(
            "/users", json={"name": "lerato", "role": "paralegal"}, headers=h("admin")
        ).status_code
        == 201
    )

    after = scrape(client, h("auditor"))
    assert recorded(after, "cases") == 2
    assert recorded(after, "admin") == recorded(before, "admin") + 1
    assert recorded(after, "inbound") == 0
    # Exposition in OpenMetrics when the scraper asks for it.
    r = client.get(
        "/metrics",
        headers={**h("auditor"), "Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


def test_no_personal_data_in_the_operations_endpoints(
    client: TestClient, principals: Any, lifecycle: Any, node: Node
) -> None:
    """Privacy canary: a marker in every personal field of a whole case life (and an
    incident reported over HTTP), then every byte the three endpoints answer is searched
    for the marker, each personal value, the case ids and the users' names."""
    h = principals.headers
    closed, _ = lifecycle.full_case()
    withdrawn, version = lifecycle.ready_for("court-withdrawal")
    lifecycle.node.cases.record_change(
        withdrawn, version, lifecycle.changes["court-withdrawal"], "setup"
    )
    r = client.post(
        "/cases", json=msgspec.to_builtins(lifecycle.incident()), headers=h("paralegal")
    )
    assert r.status_code == 201
    reported = r.json()["case_id"]
    # Recorded over HTTP, then refused (stale version), both carrying personal data.
    for status in (200, 409):
        assert (
            client.post(
                f"/cases/{reported}/first-response",
                json=lifecycle.body(1, "first-response"),
                headers=h("paralegal"),
            ).status_code
            == status
        )

    answers = [client.get("/healthz").text, client.get("/readyz").text]
    for role in ("paralegal", "supervisor", "auditor", "admin"):
        answers.append(client.get("/metrics", headers=h(role)).text)
        answers.append(
            client.get(
                "/metrics",
                headers={**h(role), "Accept": "application/openmetrics-text; version=1.0.0"},
            ).text
        )
    text = "\n".join(answers)
    assert recorded(samples(answers[2]), "cases") > 10  # the canary's cases are counted

    ids = [str(closed), str(withdrawn), reported]
    needles = [
        lifecycle.marker,
        *lifecycle.personal_values,
        *ids,
        *(i.replace("-", "") for i in ids),
        *(principals.name(r) for r in ("paralegal", "supervisor", "auditor", "admin")),
    ]
    assert [n for n in needles if n and n in text] == []
    # Labels carry nothing but the partner id, log names and reason codes.
    labels = {(k, v) for name, pairs in samples(answers[2]) for k, v in pairs}
    assert labels == {("partner", node.config.partner), *(("log", log) for log in LOGS)}


# --- a node that has joined a region (a real nats-server) -------------------------------



def test_readiness_and_relay_figures_of_a_federated_node(
    tmp_path: Path, node: Node, principals: Any, nats_server: EmbeddedNats
) -> None:
    kit = RegionKit([node])
    join_region(node, kit.save(tmp_path / "region.json"))

    asyncio.run(create_region_streams(nats_server.url, kit.document.region))
    link = NodeLink(
        node, FederationSettings(nats_url=nats_server.url, nats_user="x", publish_interval=0)
    )
    app = create_app(node, link)
    h = principals.headers("auditor")

    # Without its lifespan the app has not started the link: not ready.
    idle = TestClient(app)
    r = idle.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "stores": dict.fromkeys(LOGS, True), "link": "not running"}

    with TestClient(app) as client:
        r = client.get("/readyz")
        assert (r.status_code, r.json()["link"]) == (200, "running")
        record_stories(node, 7, 10)
        head = node.cases.recorder.max_notification_id()

        def caught_up() -> bool:
            m = scrape(client, h)
            return (
                m[("handsoff_node_relay_position", ())] == head
                and m[("handsoff_node_relay_lag_events", ())] == 0
            )

        wait_until("the relay to catch up", caught_up)
        m = scrape(client, h)
        assert m[("handsoff_node_link_configured", ())] == 1
        assert m[("handsoff_node_relay_connected", ())] == 1
        assert m[("handsoff_node_relay_published_total", ())] > 0
        assert m[("handsoff_node_region_version", ())] == kit.document.version
        assert m[("handsoff_node_region_expires_timestamp_seconds", ())] == (
            kit.document.expires_at.timestamp()
        )
        assert m[("handsoff_node_region_error", ())] == 0  # no announcement yet: nothing to take
        assert recorded(m, "cases") == head
        assert (
            0
            < time.time() - m[("handsoff_node_relay_last_success_timestamp_seconds", ())]
            < TIMEOUT
        )
        assert m[("handsoff_node_referrals_sent_total", ())] == 0
        assert m[("handsoff_node_referrals_received_total", ())] == 0

    # Stopped with the app: not ready any more.
    assert not link.running
    assert TestClient(app).get("/readyz").status_code == 503
