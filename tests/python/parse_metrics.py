"""Parses a /metrics scrape (stdin) with the Prometheus project's own
parsers and prints its samples as JSON: [[name, {labels}, value], ...].

Both parsers must accept it: the Prometheus text parser
(prometheus_client.parser) and the stricter OpenMetrics one; they must
agree on every sample. Used by tests/tests/e2e/metrics.rs.
"""
import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families


def samples(families):
    out = []
    for family in families:
        for s in family.samples:
            out.append([s.name, dict(s.labels), s.value])
    return out


def main():
    text = sys.stdin.read()
    prometheus = samples(text_string_to_metric_families(text))
    openmetrics = samples(openmetrics_families(text))
    key = lambda s: (s[0], sorted(s[1].items()))
    if sorted(prometheus, key=key) != sorted(openmetrics, key=key):
        sys.exit("the Prometheus and OpenMetrics parsers disagree")
    json.dump(prometheus, sys.stdout)


if __name__ == "__main__":
    main()
