#!/usr/bin/env python3
"""Where a decode graph's time goes, from test/gpu/kernel_trace.cpp's trace.

Takes the graph launches with the most kernels (the decode step of the
first batch size `llmrun bench` times), drops the first (a warm-up) and
prints, as medians over the rest:
  - per kind of kernel (its name and the kernel before it, which tells the
    GEMMs apart): launches a step, time on the GPU each, and how much it
    lengthens the step: the part of its run that ends after every kernel
    started before it has ended (these parts add up to the step);
  - one stretch of one step from the middle, kernel by kernel.

usage: trace_step.py TRACE.tsv [NAME]
"""
import collections
import statistics
import sys


def short(name):
    return name if len(name) <= 28 else name[:25] + "..."


def read_steps(path):
    """The graph launches with the most kernels, in order, but the first:
    each a list of (start ns, end ns, short name, geometry)."""
    launches = collections.defaultdict(list)
    with open(path) as f:
        next(f)
        for line in f:
            start, end, corr, graph, _node, _stream, gx, gy, bx, name = line.rstrip("\n").split("\t", 9)
            if graph != "0":
                launches[(int(graph), int(corr))].append((int(start), int(end), short(name), f"{gx}x{gy}x{bx}"))
    if not launches:
        sys.exit(f"{path}: no graph-launched kernels")
    most = max(len(k) for k in launches.values())
    full = sorted((sorted(k) for k in launches.values() if len(k) == most), key=lambda k: k[0][0])
    return full[1:] or full


def kinds_of_step(kernels):
    """kind -> [launches, ns on the GPU, ns it lengthens the step] for one
    step whose kernels are sorted by start."""
    sums = collections.defaultdict(lambda: [0, 0, 0])
    last_end, previous = kernels[0][0], "start"
    for start, end, name, _geometry in kernels:
        kind = sums[f"{name} <- {previous}"]
        kind[0] += 1
        kind[1] += end - start
        kind[2] += max(0, end - max(last_end, start))
        last_end, previous = max(last_end, end), name
    return sums


def main():
    path = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else path
    steps = read_steps(path)
    print(f"\n{title}: {len(steps)} steps of {len(steps[0])} kernels")

    spans = [(max(e for _, e, *_ in k) - k[0][0]) / 1e6 for k in steps]
    busy = [sum(e - s for s, e, *_ in k) / 1e6 for k in steps]
    per_kind = collections.defaultdict(lambda: ([], []))  # kind -> (us each, ms lengthened) per step
    for kernels in steps:
        for kind, (count, duration, lengthening) in kinds_of_step(kernels).items():
            per_kind[kind][0].append(duration / count / 1e3)
            per_kind[kind][1].append((count, lengthening / 1e6))
    print(f"step {statistics.median(spans):.3f} ms from its first kernel's start to its last's end; "
          f"kernels' own times add up to {statistics.median(busy):.3f} ms")
    print("\n| kernel <- kernel before it | a step | us each | lengthens the step, ms |\n| --- | --- | --- | --- |")
    rows = []
    for kind, (durations, counts) in per_kind.items():
        rows.append((statistics.median(c[1] for c in counts), kind, counts[0][0], statistics.median(durations)))
    for lengthening, kind, count, each in sorted(rows, reverse=True):
        print(f"| {kind} | {count} | {each:.1f} | {lengthening:.3f} |")

    kernels = steps[len(steps) // 2]
    middle = len(kernels) // 2
    origin = kernels[middle][0]
    print("\none step, from its middle kernel: start and end in us from that kernel's start, "
          "then the gap to the kernel before (negative: they overlap)\n"
          "| kernel | grid x y, block | start | end | gap |\n| --- | --- | --- | --- | --- |")
    for i in range(middle, min(middle + 24, len(kernels))):
        start, end, name, geometry = kernels[i]
        gap = start - kernels[i - 1][1]
        print(f"| {name} | {geometry} | {(start - origin) / 1e3:.1f} | {(end - origin) / 1e3:.1f} | "
              f"{gap / 1e3:.1f} |")


if __name__ == "__main__":
    main()
