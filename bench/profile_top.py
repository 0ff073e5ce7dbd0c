"""Top hot spots of a py-spy `--format raw` profile (collapsed stacks), self and inclusive, in percent.

py-spy record --format raw --threads --nonblocking -o /tmp/worker.txt --pid PID
python bench/profile_top.py /tmp/worker.txt --top 15
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


_PATH = re.compile(r"\((?:[^()]*/(?:site-packages|lib/python3\.\d+|main)/)")


def frame_name(frame: str, keep_lines: bool) -> str:
    """`function (file:line)` with the file shortened to its package path and, by default, no line."""
    frame = _PATH.sub("(", frame.strip())
    return frame if keep_lines else _LINE.sub(")", frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--lines", action="store_true", help="keep line numbers (per line, not per function)")
    parser.add_argument("--thread", help="only stacks whose thread frame contains this text")
    args = parser.parse_args(argv)

    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread", "process")):
            thread = frames[0]
            frames = [f for f in frames[1:] if not f.startswith("thread")]
        else:
            thread = "?"
        if frames and frames[0].startswith("process"):
            frames = frames[1:]
        if args.thread and args.thread not in thread:
            continue
        threads[re.sub(r"\(\d+\)", "", thread).replace("  ", " ")] += n
        total += n
        names = [frame_name(f, args.lines) for f in frames]
        if names:
            self_counts[names[-1]] += n
        for name in set(names):
            incl_counts[name] += n
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total:,} samples\n")
    print("| thread | samples | % |\n| --- | --- | --- |")
    for t, n in threads.most_common(8):
        print(f"| {t} | {n:,} | {100 * n / total:.1f} |")
    print(f"\n### Top {args.top} by self time (the frame on top of the stack)\n")
    print("| # | function (file) | self % | inclusive % |\n| --- | --- | --- | --- |")
    for i, (name, n) in enumerate(self_counts.most_common(args.top), 1):
        print(f"| {i} | `{name}` | {100 * n / total:.1f} | {100 * incl_counts[name] / total:.1f} |")
    print(f"\n### Top {args.top} by inclusive time (the frame anywhere on the stack)\n")
    print("| # | function (file) | inclusive % | self % |\n| --- | --- | --- | --- |")
    shown = 0
    for name, n in incl_counts.most_common():
        if n >= 0.75 * total:  # entry points (runpy, cli, event loop) say nothing
            continue
        shown += 1
        print(f"| {shown} | `{name}` | {100 * n / total:.1f} | {100 * self_counts[name] / total:.1f} |")
        if shown >= args.top:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
