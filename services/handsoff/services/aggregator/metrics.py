"""The aggregator's Prometheus figures (GET /metrics, open like the rest of its feeds).

Region totals only: no per-partner count, since the releases are disclosure-controlled and
a per-partner message count over time is not. The totals shown here are already public at
each release (`inputs.last_seq`, `inputs.accepted` of every signed statement). Read at each
scrape from `Aggregator.vitals()` (memory and single-row reads, on the event loop's thread,
which owns the SQLite connection); nothing here calls NATS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from handsoff.services.aggregator.service import Aggregator


class AggregatorCollector:
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def collect(self) -> Iterator[Metric]:
        v = self.aggregator.vitals()
        info = GaugeMetricFamily(
            "handsoff_aggregator_info",
            "The aggregator's region (value always 1)",
            labels=["region"],
        )
        info.add_metric([self.aggregator.region.region], 1)
        yield info
        doc = self.aggregator.region
        yield GaugeMetricFamily(
            "handsoff_aggregator_region_version",
            "The region version held (every message is judged by it)",
            value=doc.version,
        )
        yield GaugeMetricFamily(
            "handsoff_aggregator_region_expires_timestamp_seconds",
            "Unix time at which the region version held expires: the coordinators renew "
            "it before (`handsoff region renew`); nodes refuse to take an expired version",
            value=doc.expires_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "handsoff_aggregator_region_error",
            "1 if the last reload of the region file (SIGHUP) took nothing: /readyz and the "
            "log say why",
            value=int(self.aggregator.region_error is not None),
        )
        yield GaugeMetricFamily(
            "handsoff_aggregator_position",
            "The events stream's sequence ingested up to (committed)",
            value=v.position,
        )
        yield GaugeMetricFamily(
            "handsoff_aggregator_stream_last_seq",
            "The events stream's last sequence, as last read (every stream_check_interval)",
            value=v.stream_last_seq,
        )
        yield GaugeMetricFamily(
            "handsoff_aggregator_lag_messages",
            "Messages in the events stream not ingested yet (last sequence - position)",
            value=v.lag,
        )
        yield CounterMetricFamily(
            "handsoff_aggregator_accepted", "Envelopes verified and accepted", value=v.accepted
        )
        rejected = CounterMetricFamily(
            "handsoff_aggregator_rejected",
            "Messages rejected (and quarantined), by reason code",
            labels=["reason"],
        )
        for reason, n in v.rejected.items():
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily(
            "handsoff_aggregator_duplicates",
            "Copies of messages already accepted, since this process started",
            value=v.duplicates,
        )
        yield CounterMetricFamily(
            "handsoff_aggregator_releases_kept",
            "Releases cut, signed and stored (the newest release's number)",
            value=v.releases_kept,
        )
        yield CounterMetricFamily(
            "handsoff_aggregator_releases_published",
            "Releases whose statements NATS acknowledged (the newest one's number)",
            value=v.releases_published,
        )
        if v.seconds_since_release is not None:
            yield GaugeMetricFamily(
                "handsoff_aggregator_seconds_since_release",
                "Seconds since this process last cut a release (absent until it has)",
                value=v.seconds_since_release,
            )
        yield GaugeMetricFamily(
            "handsoff_aggregator_nats_connected",
            "1 if the NATS connection is up",
            value=1 if v.connected else 0,
        )
