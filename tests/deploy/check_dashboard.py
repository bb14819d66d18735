#!/usr/bin/env python3
"""Checks the layercache Grafana dashboard (deploy/grafana/layercache-dashboard.json).

  check_dashboard.py [--promtool PATH] [--metrics-header metrics/metrics.hpp]
                     [--also FILE]... DASHBOARD.json

Structure: valid JSON, a schemaVersion, the `datasource`, `job` and `instance` template
variables, unique panel ids, grid positions inside the 24 columns, every non-row panel with
targets that all have an expr and a unique refId, and every panel, target and query variable
using the same datasource reference (the `datasource` variable).

PromQL: every expr (and the selector of every label_values() variable query), with the
template variables replaced by concrete values, is written as a recording rule into a
temporary rules file and checked with `promtool check rules`. Every selector of a layercache,
process or up series must filter on the job and instance variables.

Metric names (with --metrics-header): every layercache_* / process_* name in the dashboard,
and in the --also files (e.g. alerts.yml), must be one listed in the comment at the top of
metrics.hpp (histograms with their _bucket, _sum and _count series).

Standard library only. Exit status 0 when everything holds, 1 otherwise (also when promtool is
missing: CI must not silently skip the check).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# Concrete values for the template variables, for promtool.
SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "job": "layercache",
    "instance": ".*",
}

METRIC_RE = re.compile(r"\b((?:layercache|process)_[a-z0-9_]+|up)\b(\s*\{[^}]*\})?")
NAME_RE = re.compile(r"\b(?:layercache|process)_[a-z0-9_]+")

errors = []


def error(message):
    errors.append(message)


def substitute(text):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in SUBSTITUTIONS:
            error(f"unknown template variable ${name} in: {text}")
            return m.group(0)
        return SUBSTITUTIONS[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, text)


def walk_panels(panels):
    for p in panels:
        yield p
        # Collapsed rows hold their panels.
        yield from walk_panels(p.get("panels", []))


def check_structure(dash):
    """Returns [(where, expr)] of every PromQL expression to check."""
    exprs = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        error(f"schemaVersion missing or older than 36: {dash.get('schemaVersion')!r}")
    for key in ("title", "uid"):
        if not dash.get(key):
            error(f"dashboard has no {key}")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        error("no `datasource` template variable of type datasource (query prometheus)")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            error(f"no `{name}` query template variable")
            continue
        if v.get("datasource") != DATASOURCE_REF:
            error(f"variable {name}: datasource {v.get('datasource')!r}, want {DATASOURCE_REF}")
        query = v.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        if not m:
            error(f"variable {name}: not a label_values(selector, label) query: {query!r}")
        else:
            exprs.append((f"variable {name}", m.group(1)))
    inst = variables.get("instance", {})
    if not inst.get("multi") or not inst.get("includeAll"):
        error("variable instance: should allow several values and All")

    ids = {}
    for p in walk_panels(dash.get("panels", [])):
        title = p.get("title", "?")
        pid = p.get("id")
        if not isinstance(pid, int):
            error(f"panel {title!r}: id {pid!r} is not an integer")
        elif pid in ids:
            error(f"panel {title!r}: id {pid} already used by {ids[pid]!r}")
        else:
            ids[pid] = title
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            error(f"panel {title!r}: gridPos incomplete: {g!r}")
        elif g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24:
            error(f"panel {title!r}: gridPos outside the 24 columns: {g!r}")
        if p.get("type") == "row":
            if p.get("targets"):
                error(f"row {title!r} has targets")
            continue
        if not p.get("type"):
            error(f"panel {title!r} has no type")
        if p.get("datasource") != DATASOURCE_REF:
            error(f"panel {title!r}: datasource {p.get('datasource')!r}, want {DATASOURCE_REF}")
        targets = p.get("targets") or []
        if not targets:
            error(f"panel {title!r} has no targets")
        refids = set()
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in refids:
                error(f"panel {title!r}: missing or duplicate refId {ref!r}")
            refids.add(ref)
            if "datasource" in t and t["datasource"] != DATASOURCE_REF:
                error(f"panel {title!r} target {ref}: datasource {t['datasource']!r}")
            expr = t.get("expr", "")
            if not expr.strip():
                error(f"panel {title!r} target {ref}: no expr")
                continue
            exprs.append((f"panel {pid} {title!r} target {ref}", expr))
            for m in METRIC_RE.finditer(expr):
                matchers = m.group(2) or ""
                if 'job="$job"' not in matchers or 'instance=~"$instance"' not in matchers:
                    error(f"panel {title!r} target {ref}: {m.group(1)} does not filter on "
                          f'job="$job" and instance=~"$instance"')
    if not ids:
        error("dashboard has no panels")
    return exprs


def check_promql(exprs, promtool):
    rules = []
    for i, (where, expr) in enumerate(exprs):
        rules.append({"record": f"dashboard:expr_{i}", "expr": substitute(expr)})
    # JSON is YAML: no YAML library needed.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard_exprs.rules.json")
        with open(path, "w") as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode == 0:
            return
        error(f"promtool check rules failed:\n{r.stdout}{r.stderr}")
        # Pinpoint: one expression at a time.
        for (where, _), rule in zip(exprs, rules):
            with open(path, "w") as f:
                json.dump({"groups": [{"name": "one", "rules": [rule]}]}, f)
            r = subprocess.run([promtool, "check", "rules", path], capture_output=True,
                               text=True)
            if r.returncode != 0:
                error(f"{where}: invalid PromQL: {rule['expr']}\n{r.stdout}{r.stderr}")


def known_metrics(header_path):
    """The metric names listed in the leading comment of metrics.hpp."""
    names = set()
    with open(header_path) as f:
        for line in f:
            if not line.startswith("//"):
                if names:
                    break
                continue
            previous = None
            for m in re.finditer(r"(?<![A-Za-z0-9_])((?:layercache|process)_[a-z0-9_]+|_[a-z][a-z0-9_]*)",
                                 line):
                token = m.group(1)
                if token.startswith("_"):
                    # "layercache_cache_evicted_blobs_total, _evicted_bytes_total": the
                    # continuation shares the previous name's prefix up to its first segment.
                    if previous is None:
                        continue
                    first = "_" + token[1:].split("_")[0]
                    cut = previous.find(first)
                    if cut < 0:
                        continue
                    token = previous[:cut] + token
                names.add(token)
                if "histogram" in line:
                    names.update(token + s for s in ("_bucket", "_sum", "_count"))
                previous = token
    if not names:
        error(f"no metric names found in the comment of {header_path}")
    return names


def check_names(text, where, known):
    for name in sorted(set(NAME_RE.findall(text))):
        if name not in known:
            error(f"{where}: unknown metric {name} (not listed in metrics.hpp)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboard")
    ap.add_argument("--promtool", default=shutil.which("promtool"))
    ap.add_argument("--metrics-header")
    ap.add_argument("--also", action="append", default=[], metavar="FILE",
                    help="a file whose metric names must exist too (e.g. alerts.yml); repeatable")
    args = ap.parse_args()

    try:
        with open(args.dashboard) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"FAIL: {args.dashboard}: {e}")
        return 1

    exprs = check_structure(dash)

    promtool = args.promtool
    if not promtool or not (os.path.isfile(promtool) and os.access(promtool, os.X_OK)):
        error(f"promtool not found ({promtool!r}): install the prometheus package")
    else:
        check_promql(exprs, promtool)

    if args.metrics_header:
        known = known_metrics(args.metrics_header)
        if known:
            check_names("\n".join(e for _, e in exprs), args.dashboard, known)
            for path in args.also:
                with open(path) as f:
                    check_names(f.read(), path, known)

    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print(f"OK: {args.dashboard}: {len(exprs)} expressions, structure and PromQL valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
