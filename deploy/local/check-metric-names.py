#!/usr/bin/env python3
"""Checks that every PromQL expression of the alert rules and of the Grafana
dashboard names only metrics that a running broker exposes.

    check-metric-names.py --metrics A.txt [--metrics B.txt ...] \
        --rules deploy/prometheus/alerts.yaml --dashboard deploy/grafana/caf-broker.json

The metrics files are /metrics answers of running replicas (after traffic, so
that counters created on first use are present). A histogram counts as exposed
through its _bucket, _sum and _count series. Names that are not the broker's
are allowed only from the short lists below, each with its reason. Exits 1 and
names every unknown metric, with the expression that uses it.
"""

import argparse
import json
import re
import sys

# Not the broker's: Prometheus's own series and the blackbox exporter's TLS probe.
EXTERNAL = {
    "up": "Prometheus: whether the last scrape of a target succeeded",
    "ALERTS": "Prometheus: the alerts pending or firing",
    "probe_ssl_earliest_cert_expiry": "blackbox exporter: the listener's certificate expiry",
}
# UPCOMING: metrics of parts not delivered yet; each is a placeholder name to
# replace by the real one when it exists.
UPCOMING = {}

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr):
    """The metric names an expression selects (functions and labels excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in IDENT.finditer(text):
        word = match.group(0)
        before = text[match.start() - 1] if match.start() > 0 else " "
        if before.isdigit() or before == "." or word.lower() in KEYWORDS:
            continue  # a number's exponent or unit, or an operator
        after = text[match.end():].lstrip()
        if after.startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


def rule_expressions(path):
    """The `expr:` of each rule, single-line or block (`expr: |`)."""
    exprs, lines = [], open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
        i += 1
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest not in ("|", ">", "|-", ">-"):
            exprs.append(rest)
            continue
        block = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i])
            i += 1
        exprs.append("\n".join(block))
    return exprs


def variable_expression(query):
    """The selector of a `label_values(selector, label)` variable query, else the query."""
    m = re.match(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", query, re.S)
    return m.group(1) if m else query


def dashboard_expressions(path):
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "datasource":
                return  # a data source variable: its query is a plugin type
            if node.get("type") == "query" and "definition" in node:
                exprs.append(variable_expression(node["definition"]))
                return
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str) and value:
                    exprs.append(value)
                elif isinstance(value, dict) and key == "query" and value.get("query"):
                    exprs.append(value["query"])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.load(open(path, encoding="utf-8")))
    return exprs


def exposed(paths):
    names = set()
    for path in paths:
        for line in open(path, encoding="utf-8"):
            if line.startswith("# TYPE "):
                names.add(line.split()[2])
            elif line.strip() and not line.startswith("#"):
                name = IDENT.match(line)
                if name:
                    names.add(name.group(0))
    for name in list(names):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                names.add(name[: -len(suffix)])
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", action="append", required=True)
    parser.add_argument("--rules", action="append", default=[])
    parser.add_argument("--dashboard", action="append", default=[])
    args = parser.parse_args()

    known = exposed(args.metrics)
    if not any(name.startswith("caf_broker_") for name in known):
        sys.exit("check-metric-names: the metrics files hold no caf_broker_ metric")
    sources = [(p, e) for p in args.rules for e in rule_expressions(p)]
    sources += [(p, e) for p in args.dashboard for e in dashboard_expressions(p)]
    if not sources:
        sys.exit("check-metric-names: no expression found")
    unknown, upcoming, used = [], set(), set()
    for path, expr in sources:
        for name in sorted(metric_names(expr)):
            used.add(name)
            if name in known or name in EXTERNAL:
                continue
            if name in UPCOMING:
                upcoming.add(name)
                continue
            unknown.append(f"{path}: {name} in: {' '.join(expr.split())}")
    for name in sorted(upcoming):
        print(f"check-metric-names: UPCOMING {name} ({UPCOMING[name]}) is not exposed yet")
    if unknown:
        print("check-metric-names: metrics the broker does not expose:", file=sys.stderr)
        for line in unknown:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)
    broker = sorted(n for n in used if n in known)
    print(f"check-metric-names: {len(sources)} expressions use {len(broker)} broker metrics, all exposed")


if __name__ == "__main__":
    main()
