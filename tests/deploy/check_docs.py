#!/usr/bin/env python3
"""Checks that the Markdown tables of the documentation render (GitHub-flavoured Markdown).

  check_docs.py FILE.md...

A table is a run of lines starting with `|`. Each must have the delimiter row (`| --- |`) as
its second line, and every row as many cells as the header: a blank line inside a table ends
it, and what follows is then a run of rows without a header, which renders as plain text. A
cell count counts the pipes that are not escaped (`\\|`); GitHub splits cells at a pipe even
inside a code span. Code blocks are skipped. Standard library only; exit status 1 on a
finding.
"""

import re
import sys

DELIMITER = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")


def cells(line):
    return len(re.findall(r"(?<!\\)\|", line.rstrip())) - 1


def tables(lines):
    """(first line number, rows) of each table outside code blocks."""
    fenced = False
    start, rows = None, []
    for n, line in enumerate(lines + [""], 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            if start is None:
                start = n
            rows.append(line)
            continue
        if start is not None:
            yield start, rows
        start, rows = None, []


def check(path):
    problems = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for start, rows in tables(lines):
        if len(rows) < 2 or not DELIMITER.match(rows[1].rstrip()):
            problems.append(f"{path}:{start}: a table without its delimiter row (a blank line "
                            "inside a table above?)")
            continue
        want = cells(rows[0])
        for i, row in enumerate(rows):
            if cells(row) != want:
                problems.append(f"{path}:{start + i}: {cells(row)} cells, the header has {want}")
    return problems


def main(paths):
    problems = [p for path in paths for p in check(path)]
    for p in problems:
        print(p)
    print(f"{len(paths)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
