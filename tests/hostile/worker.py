"""A long-lived child process that opens files on request, so fuzzing survives crashes
and hangs of the C libraries underneath (libhdf5 can segfault or loop on damaged files)
and reports them as failures instead of taking pytest down.

Parent side: ``Worker().exercise(path, fmt)`` -> {"status": "ok" | "weightviz" | "raw" |
"fatal", ...}. The child runs under the same limits as the hostile harness (address
space, no core files, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1) and is restarted after a fatal.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys

TIMEOUT = float(os.environ.get("WEIGHTVIZ_FUZZ_TIMEOUT", 30))   # generous: the first file may import torch


def exercise(path, fmt=None) -> None:
    """Open, list and summarise ``path`` the way a user would; only WeightvizError may come out."""
    import weightviz as wv
    ck = wv.open(path, format=fmt)
    for name, entry in ck.items():
        assert isinstance(name, str)
        _ = (entry.shape, entry.dtype, entry.nbytes)
        if entry.nbytes <= 1 << 24:
            entry.numpy()
    repr(ck)
    ck._repr_html_()
    if ck.nbytes <= 1 << 26:
        st = wv.stats(ck, progress=False)
        repr(st)
        st._repr_html_()


def _serve() -> None:                                  # the child's loop
    import faulthandler
    import traceback

    import weightviz as wv
    for line in sys.stdin:
        req = json.loads(line)
        faulthandler.dump_traceback_later(max(TIMEOUT - 5, 1), exit=True)   # where a hang sits
        try:
            exercise(req["path"], req.get("format"))
            out = {"status": "ok"}
        except wv.WeightvizError as exc:
            out = {"status": "weightviz", "cls": type(exc).__name__, "message": str(exc)[:2000]}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            out = {"status": "raw", "cls": type(exc).__name__, "message": str(exc)[:2000],
                   "traceback": "".join(traceback.format_exception(exc))[-4000:]}
        faulthandler.cancel_dump_traceback_later()
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


class Worker:
    def __init__(self):
        self.proc = None

    def _start(self):
        import tempfile

        from .harness import MEMORY, _limits, child_env
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c",
                                      "from tests.hostile.worker import _serve; _serve()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     env=child_env(), preexec_fn=_limits(MEMORY), text=True, bufsize=1)

    def exercise(self, path, fmt=None) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"path": str(path), "format": fmt}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        why = "hung" if not ready else "died"
        self.close()
        self.err.seek(0)
        tail = self.err.read().decode("utf-8", "replace")[-3000:]
        return {"status": "fatal", "message": f"the reader {why} on this input", "traceback": tail}

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
            rc = self.proc.returncode
            self.proc = None
            return rc
        return None

