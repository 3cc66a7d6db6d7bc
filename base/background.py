"""Overlapping file I/O with the networks: a reader thread ahead of the consumer, a writer thread behind it.

Image decoding (PIL, OpenCV) and PNG encoding release the GIL for their C work, so on a CPU with free cycles (or
with the networks on a GPU) the frames of a video are read and its masks written while the networks run, as
Cutie does for its PNGs. Errors in either thread are raised in the caller, never lost: a reader's error where the
failed item would have come, a writer's error at the next :meth:`BackgroundWriter.submit` or at
:meth:`BackgroundWriter.close`.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterable, Iterator, List, Optional, TypeVar

T = TypeVar("T")

_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate over ``items`` with up to ``depth`` items produced ahead in a background thread.

    The order is kept. Leaving the loop early (break, exception) stops the producer after at most ``depth``
    more items. ``depth`` 0 iterates in the caller's thread.
    """
    if depth < 0:
        raise ValueError(f"depth must be at least 0, got {depth}")
    if depth == 0:
        yield from items
        return
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as err:  # handed to the consumer
            slots.put((None, err))
            return
        slots.put((_DONE, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = slots.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


class BackgroundWriter:
    """Runs submitted calls (e.g. PNG writes) in order in one background thread; at most ``depth`` wait.

    Use as a context manager: leaving the block waits for every submitted call and raises the first error.
    With ``threaded=False`` each call runs at once in the caller's thread (same interface).
    """

    def __init__(self, depth: int = 4, threaded: bool = True):
        self._jobs: queue.Queue[Optional[tuple]] = queue.Queue(maxsize=max(1, depth))
        self._errors: List[BaseException] = []
        self._threaded = threaded
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        if threaded:
            self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._errors:  # after a failure, skip the rest: close() raises it
                continue
            fn, args = job
            try:
                fn(*args)
            except BaseException as err:
                self._errors.append(err)

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; raises an earlier call's error instead of queueing more."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        self._raise()
        if not self._threaded:
            fn(*args)
            return
        self._jobs.put((fn, args))

    def close(self) -> None:
        """Wait for every submitted call; raise the first error."""
        if not self._closed:
            self._stop()
        self._raise()

    def _stop(self) -> None:
        self._closed = True
        if self._threaded:
            self._jobs.put(None)
            self._thread.join()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:  # already failing: finish quietly, keep the original error
            self._stop()


def spare_cpu_cores(compute_threads: int, device_type: str = "cpu") -> bool:
    """Whether I/O threads can run beside the networks without taking their cores: always on a GPU; on the CPU
    only when the machine has more cores than the networks' ``compute_threads``. Where they cannot, a reader and
    a writer thread only move the decoding time into the networks' time (measured on 2 cores: the wall clock did
    not change, the networks' time grew by the I/O time)."""
    if device_type != "cpu":
        return True
    return (os.cpu_count() or 1) > compute_threads
