"""The catalog of hostile and broken weight files, and what weightviz must do with each.

A :class:`Case` writes its file (and any helper files: a secret it must not read, a
module it must not import) into an empty directory, and says the expected outcome of
every public verb on it:

* :class:`Ok`      the file opens; optional checks on what is listed / flagged / escaped;
* :class:`Refuse`  a ``WeightvizError`` subclass whose message matches a keyword;
* :class:`Either`  contract only: success or any ``WeightvizError`` (never a crash,
                   hang, raw exception, payload run, outside read or write).

``python -m tests.hostile.catalog DIR`` writes every case into ``DIR/<name>/`` and
prints the table (name, category, file, expected outcome).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union


@dataclass(frozen=True)
class Ok:
    count: int | None = None          # number of tensors listed
    format: str | None = None         # Checkpoint.format
    flags: tuple[str, ...] = ()       # stats flags that some tensor must carry
    lambdas: bool = False             # metadata['lambda_layers'] must name the Lambda(s)
    html_probe: str | None = None     # a raw hostile string that must never appear in HTML

    def __str__(self):
        bits = [f"{k}={v}" for k, v in self.__dict__.items() if v not in (None, (), False)]
        return "ok" + (f"({', '.join(bits)})" if bits else "")


@dataclass(frozen=True)
class Refuse:
    error: str | tuple[str, ...]      # accepted exception class name(s) from weightviz.errors
    keyword: str                      # regex searched (case-insensitive) in the message

    @property
    def errors(self) -> tuple[str, ...]:
        return (self.error,) if isinstance(self.error, str) else self.error

    def __str__(self):
        return f"{'|'.join(self.errors)} /{self.keyword}/"


@dataclass(frozen=True)
class Either:
    note: str = ""

    def __str__(self):
        return "ok or WeightvizError"


Outcome = Union[Ok, Refuse, Either]
VERBS = ("open", "stats", "check", "load", "inspect", "browse", "build")


@dataclass(frozen=True)
class Case:
    name: str
    category: str          # payload | size | outside | broken | misleading | nasty | escape
    filename: str
    make: Callable[[Path], None]
    expect: Outcome        # outcome of open (and by default of every verb)
    verbs: dict = field(default_factory=dict)   # per-verb overrides
    keras: bool = False    # also run weightviz.build on it
    syspath: bool = False  # the case directory is put on sys.path (a module there must not be imported)
    secret: bool = False   # a secret lives next to the file: it must not appear in any output
    heavy: bool = False    # slow to generate or to read (10,000 tensors, 1 GiB bombs)
    timeout: float | None = None   # seconds before the case counts as hung (default: the harness's)

    def outcome(self, verb: str) -> Outcome | None:
        if (verb == "build" and not self.keras) or (verb == "browse" and self.heavy):
            return None
        if verb in self.verbs:
            return self.verbs[verb]
        if isinstance(self.expect, Ok) and verb != "open":
            return Ok(flags=self.expect.flags if verb == "stats" else (),
                      html_probe=self.expect.html_probe)
        return self.expect

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.make(directory)
        path = directory / self.filename
        assert path.exists() or path.is_symlink(), f"case {self.name} did not write {self.filename}"
        return path


def open_at_once(case: Case, tmp_path, seconds: float = 2.0) -> None:
    """Write ``case`` and open it in this process: a Refuse must raise one of its errors
    naming its keyword, anything else must open (with its count of tensors, when an Ok says)
    and display; either within ``seconds``."""
    import re
    import time

    import pytest

    import weightviz as wv
    from weightviz.errors import WeightvizError
    path = case.write(tmp_path)
    t = time.perf_counter()
    if isinstance(case.expect, Refuse):
        with pytest.raises(WeightvizError) as err:
            wv.open(path)
        assert set(case.expect.errors) & {k.__name__ for k in type(err.value).__mro__}
        assert re.search(case.expect.keyword, str(err.value), re.I), str(err.value)
    else:
        ck = wv.open(path)
        if isinstance(case.expect, Ok) and case.expect.count is not None:
            assert len(ck) == case.expect.count
        repr(ck)
    assert time.perf_counter() - t < seconds


def damaged_folder_reads_cleanly(folder, target, *, examples: int, max_flips: int) -> None:
    """Hypothesis: ``target`` (a file of ``folder``) with a few bytes flipped and its tail cut
    off, then every tensor of the folder read: a WeightvizError or a clean read, nothing else."""
    import hypothesis
    from hypothesis import strategies as st

    import weightviz as wv
    from weightviz.errors import WeightvizError
    original = target.read_bytes()

    @hypothesis.settings(max_examples=examples, deadline=None, database=None)
    @hypothesis.given(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)),
                               min_size=1, max_size=max_flips),
                      st.integers(len(original) // 2, len(original)))
    def run(flips, keep):
        data = bytearray(original[:keep])
        for pos, x in flips:
            if pos < len(data):
                data[pos] ^= x
        target.write_bytes(bytes(data))
        try:
            ck = wv.open(folder)
            for name in ck:
                ck[name].numpy()
        except WeightvizError:
            pass
    run()


def all_cases() -> list[Case]:
    from . import cases_code, cases_gguf, cases_misc, cases_onnx, cases_outside, cases_size
    cases = (cases_code.CASES + cases_size.CASES + cases_outside.CASES + cases_misc.CASES + cases_gguf.CASES
             + cases_onnx.CASES)
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names {dup}"
    return cases


def counts(cases: list[Case]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in cases:
        out[c.category] = out.get(c.category, 0) + 1
    return out


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "hostile-cases")
    cases = all_cases()
    for c in cases:
        c.write(target / c.name)
        print(f"{c.name:42s} {c.category:10s} {c.filename:28s} {c.expect}")
    print(counts(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
