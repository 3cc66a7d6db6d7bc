"""Reader and writer threads: order kept, errors raised in the caller, early exits stop the producer."""

from __future__ import annotations

import threading
import time

import pytest

from base.background import BackgroundWriter, prefetch, spare_cpu_cores


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_the_order(depth):
    assert list(prefetch(iter(range(20)), depth=depth)) == list(range(20))


def test_prefetch_reads_ahead_in_another_thread():
    threads, produced = [], []

    def items():
        for i in range(5):
            threads.append(threading.current_thread().name)
            produced.append(i)
            yield i

    it = prefetch(items(), depth=2)
    assert next(it) == 0
    deadline = time.monotonic() + 30
    while len(produced) < 4 and time.monotonic() < deadline:  # however loaded the machine
        time.sleep(0.01)
    time.sleep(0.1)  # a producer that did not block would go on now
    assert produced == [0, 1, 2, 3]  # one taken, two waiting in the queue, one blocked on the full queue
    assert list(it) == [1, 2, 3, 4] and set(threads) == {"prefetch"}
    produced.clear()
    assert list(prefetch(iter(range(3)), depth=0)) == [0, 1, 2]


def test_prefetch_raises_the_producers_error_in_place():
    def items():
        yield 1
        raise OSError("frame 2 unreadable")

    got = []
    with pytest.raises(OSError, match="frame 2 unreadable"):
        for item in prefetch(items(), depth=2):
            got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_producer():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    it = prefetch(items(), depth=2)
    for item in it:
        if item == 3:
            break
    it.close()  # what leaving the loop does once the iterator is dropped
    assert not [t for t in threading.enumerate() if t.name == "prefetch" and t.is_alive()]  # joined, not left behind
    assert len(produced) <= 4 + 2 + 1  # taken, queued, held by the stopped producer: final, the thread has exited


@pytest.mark.parametrize("threaded", [True, False])
def test_writer_runs_every_call_in_order(threaded):
    done = []
    with BackgroundWriter(depth=2, threaded=threaded) as writer:
        for i in range(10):
            writer.submit(done.append, i)
    assert done == list(range(10))


@pytest.mark.parametrize("threaded", [True, False])
def test_writer_errors_are_raised_not_lost(threaded):
    def fail(i):
        if i == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(threaded=threaded) as writer:
            for i in range(5):
                writer.submit(fail, i)
                time.sleep(0.01)


def test_the_original_error_wins_over_the_writers():
    with pytest.raises(KeyError):
        with BackgroundWriter() as writer:
            writer.submit(lambda: None)
            raise KeyError("mine")


def test_spare_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert not spare_cpu_cores(2) and spare_cpu_cores(1) and spare_cpu_cores(2, "cuda")
