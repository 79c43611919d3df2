"""Scraping a Prometheus endpoint from inside a test host, as Prometheus does, and reading samples."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.support.topology import Host


@dataclass(frozen=True)
class Sample:
    name: str  # as exposed, e.g. wireguard_sent_bytes_total
    labels: Mapping[str, str]
    value: float


_GET = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
)


def scrape(host: Host, url: str) -> list[Sample]:
    """GET `url` from inside `host`; every sample of the text exposition format."""
    text = host.run([sys.executable, "-c", _GET, url], timeout=15.0).stdout
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample `name` whose labels include `labels`; AssertionError if not exactly one."""
    found = [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{len(found)} samples {name} {labels}: {found[:5]}"
    return found[0].value
