"""One worker thread for a widget's slow work (the LayerBrowser's scan of a large tensor):
the latest job, what it is for, and a way to wait for it."""
from __future__ import annotations


class Background:
    def __init__(self):
        self._pool = None
        self.pending = None                # (key, Future) of the latest job

    def submit(self, key, fn) -> None:
        """Run ``fn()`` on the worker thread, unless a job for ``key`` is already running."""
        from concurrent.futures import ThreadPoolExecutor
        if self.running == key:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="weightviz-widget")
        self.pending = (key, self._pool.submit(fn))

    @property
    def running(self):
        """The key of the job still running, or None."""
        p = self.pending
        return None if p is None or p[1].done() else p[0]

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the latest job (its errors are the job's to show, not raised here)."""
        p = self.pending
        if p is not None:
            try:
                p[1].result(timeout)
            except Exception:  # noqa: BLE001 - the job shows its own errors
                pass
