"""Parses an lbctl /metrics answer with the Prometheus Python client's own
parsers and prints what they read, as JSON, for tests/admin to check.

usage: parse_metrics.py FILE prometheus|openmetrics
exit 0: JSON on stdout: [{"name", "type", "samples": [{"name", "labels", "value"}]}]
exit 1: the parser rejected the text (its error on stderr)
exit 3: prometheus_client is not installed
"""

import json
import sys

try:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )
    from prometheus_client.parser import (
        text_string_to_metric_families as prometheus_families,
    )
except ImportError as e:
    print(f"prometheus_client is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    path, fmt = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parse = openmetrics_families if fmt == "openmetrics" else prometheus_families
    try:
        families = [
            {
                "name": fam.name,
                "type": fam.type,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in fam.samples
                ],
            }
            for fam in parse(text)
        ]
    except Exception as e:  # the parsers raise ValueError and friends
        print(f"{fmt} parser rejected the text: {e!r}", file=sys.stderr)
        sys.exit(1)
    json.dump(families, sys.stdout)


main()
