#!/usr/bin/env python3
"""Table of medians and ratios from a bench/ CSV file (bench,workload,round,tool,seconds,iops).

    python3 bench/summarize.py RESULTS.csv [--base keel] [--markdown]

One row per workload (in the order first measured): the median seconds of each tool, then for
every other tool X the ratio "keel vs X" = X's seconds / keel's seconds, i.e. how many times
faster keel is (for the raw file: the fraction of the physical limit keel reaches). A ratio is
the median of the per-round ratios: rounds are interleaved, so the two runs of a round saw
nearly the same machine load. Standard library only.
"""
import csv
import statistics
import sys
from collections import OrderedDict, defaultdict


def load(path):
    rows = list(csv.DictReader(open(path)))
    workloads = OrderedDict()
    tools = []
    data = defaultdict(lambda: defaultdict(dict))  # workload -> round -> tool -> seconds
    ran = defaultdict(set)  # workload -> tools that ran it (failed or not)
    for r in rows:
        workloads.setdefault(r["workload"], None)
        ran[r["workload"]].add(r["tool"])
        if r["tool"] not in tools:
            tools.append(r["tool"])
        try:
            s = float(r["seconds"])
        except ValueError:
            continue
        if s == s and s > 0:  # not nan
            data[r["workload"]][r["round"]][r["tool"]] = s
    return list(workloads), tools, data, ran


def median_or_none(values):
    return statistics.median(values) if values else None


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    base = "keel"
    if "--base" in argv:
        base = argv[argv.index("--base") + 1]
    workloads, tools, data, ran = load(path)
    if base in tools:
        tools.remove(base)
        tools.insert(0, base)
    others = [t for t in tools if t != base]
    header = ["workload"] + [f"{t} s" for t in tools] + [f"{base} vs {t}" for t in others]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for w in workloads:
        rounds = data[w].values()
        cells = [w]
        for t in tools:
            m = median_or_none([r[t] for r in rounds if t in r])
            cells.append(("failed" if t in ran[w] else "-") if m is None else f"{m:.3f}")
        for t in others:
            m = median_or_none([r[t] / r[base] for r in rounds if t in r and base in r])
            cells.append("-" if m is None else f"**{m:.2f}x**")
        print("| " + " | ".join(cells) + " |")
    print(f"\n({base} vs X = X's time / {base}'s time, median of the per-round ratios: "
          f"above 1 means {base} is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
