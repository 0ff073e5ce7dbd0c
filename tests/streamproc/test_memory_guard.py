"""The embedded broker's memory budget: reading a process's memory, and a replay that stops when told."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from streamproc.memory_guard import default_budget_bytes, rss_bytes, total_memory_bytes, until_set


def test_rss_of_a_process_grows_with_what_it_holds_and_is_zero_once_it_is_gone():
    holds_200_mib = (
        "import sys\n"
        "b = bytearray(200 << 20)\n"
        "b[::4096] = b'x' * len(b[::4096])  # touch every page\n"
        "print(1, flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", holds_200_mib], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"1"
    assert 200 << 20 <= rss_bytes(child.pid) < 400 << 20
    child.communicate(b"")
    assert rss_bytes(child.pid) == 0


def test_rss_of_this_process_is_positive_and_below_the_machine():
    assert 0 < rss_bytes(os.getpid()) < total_memory_bytes()


def test_default_budget_is_half_the_machine():
    assert default_budget_bytes() == total_memory_bytes() // 2


def test_until_set_stops_before_the_next_item_once_set():
    stop = threading.Event()
    seen = []
    for item in until_set(range(100), stop):
        seen.append(item)
        if item == 6:
            stop.set()
    assert seen == list(range(7))
    assert list(until_set(range(5), threading.Event())) == [0, 1, 2, 3, 4]
