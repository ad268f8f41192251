"""The ``weightviz`` command: the same text the notebook reprs show, for terminals and CI.

    weightviz inspect FILE [--format NAME]
    weightviz check FILE --model pkg.module:Class [--kwargs JSON] [--json] [--headers-only] [--format NAME]
    weightviz check ADAPTER --base BASE [--json]      (a LoRA/PEFT adapter against its base)
    weightviz diff A B [--json] [--atol X] [--changed-only]

Exit status: 0 when the file opens (inspect), everything fits (check) or every tensor
pair is the same within tolerance (diff); 1 when check finds something that does not
fit or diff finds a difference; 2 on a bad file or bad usage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_MISMATCH, EXIT_BAD = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 on usage errors already; keep the house wording
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="weightviz", description="Open, inspect and check neural-network weight files.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    ins = sub.add_parser("inspect", help="print a checkpoint's summary: format, tensors, layers")
    ins.add_argument("file")
    ins.add_argument("--format", default=None, help="reader name, when detection is not wanted")
    chk = sub.add_parser("check", help="compare a checkpoint with a model class, or an adapter with its "
                                        "base; exit 1 if it does not fit")
    chk.add_argument("file", help="a checkpoint, or a LoRA/PEFT adapter (folder or file)")
    of = chk.add_mutually_exclusive_group(required=True)
    of.add_argument("--model", metavar="pkg.module:Class",
                    help="import path of the model class or factory (the current directory is importable)")
    of.add_argument("--base", metavar="BASE",
                    help="the adapter's base: a checkpoint path, or pkg.module:Class")
    chk.add_argument("--kwargs", default=None, metavar="JSON",
                     help='constructor arguments as a JSON object, e.g. \'{"num_classes": 10}\'')
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    chk.add_argument("--headers-only", action="store_true",
                     help="compare names, shapes and dtypes only: skip the NaN/Inf scan and cast checks")
    chk.add_argument("--format", default=None, help="reader name, when detection is not wanted")
    sts = sub.add_parser("stats", help="per-tensor statistics and flags; exit 1 if a --fail-on flag occurs")
    sts.add_argument("file")
    sts.add_argument("--json", action="store_true", help="print the table as JSON")
    sts.add_argument("--fail-on", type=_flags, default=(), metavar="FLAGS",
                     help="comma-separated flags that make the exit status 1, e.g. nan,inf,dead "
                          "(any of: " + ", ".join(_flag_names()) + ")")
    sts.add_argument("--format", default=None, help="reader name, when detection is not wanted")
    dif = sub.add_parser("diff", help="compare two checkpoints tensor by tensor; exit 1 if anything differs")
    dif.add_argument("a")
    dif.add_argument("b")
    dif.add_argument("--atol", type=_tolerance, default=0.0, metavar="X",
                     help="elements closer than X count as unchanged (default 0: exact)")
    dif.add_argument("--json", action="store_true", help="print the report as JSON")
    dif.add_argument("--changed-only", action="store_true", help="list only the pairs that differ")
    return p


# --fail-on names: statistics flags, and the short forms the layer browser shows
_FLAG_ALIASES = {"dead": "dead_units", "zero": "all_zero", "const": "constant", "one": "single_value",
                 "outl": "outliers", "lowp": "low_precision"}


def _flag_names() -> tuple:
    from .statistics.table import FLAGS
    return FLAGS + tuple(_FLAG_ALIASES)


def _flags(text: str) -> tuple:
    names = [t.strip() for t in text.split(",") if t.strip()]
    known = _flag_names()
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown flag(s) {', '.join(bad) or repr(text)}: "
                                         f"expected some of {', '.join(known)}")
    return tuple(dict.fromkeys(_FLAG_ALIASES.get(n, n) for n in names))


def _stats(args) -> int:
    from .formats import open_checkpoint
    from .statistics.table import stats
    table = stats(open_checkpoint(args.file, format=args.format),
                  progress=sys.stderr.isatty() or None)
    print(table.to_json() if args.json else repr(table))
    hit = {f: table.flagged(f) for f in args.fail_on if f in table.summary()}
    for f, names in hit.items():
        print(f"fail-on {f}: {len(names)} tensor{'s' if len(names) != 1 else ''} "
              f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})", file=sys.stderr)
    return EXIT_MISMATCH if hit else EXIT_OK


def _tolerance(text: str) -> float:
    import math
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not (math.isfinite(x) and x >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text!r}")
    return x


def _diff(args) -> int:
    from .compare.tensordiff import diff
    report = diff(args.a, args.b, atol=args.atol, progress=sys.stderr.isatty() or None)
    print(report.to_json() if args.json else report.view(all_rows=not args.changed_only).to_text())
    return EXIT_OK if report.same else EXIT_MISMATCH


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    args = _parser().parse_args(argv)
    from .errors import WeightvizError
    from .formats import open_checkpoint
    try:
        if args.command == "diff":
            return _diff(args)
        if args.command == "stats":
            return _stats(args)
        if args.command == "inspect":
            print(repr(open_checkpoint(args.file, format=args.format)))
            return EXIT_OK
        kwargs = {}
        if args.kwargs is not None:
            try:
                kwargs = json.loads(args.kwargs)
            except json.JSONDecodeError as e:
                return _fail(f"--kwargs is not valid JSON ({e}); expected an object such as "
                             f"'{{\"num_classes\": 10}}'")
            if not isinstance(kwargs, dict):
                return _fail(f"--kwargs must be a JSON object, got {type(kwargs).__name__}")
        if os.getcwd() not in sys.path:  # `--model mymodels:Net` from the project directory
            sys.path.insert(0, os.getcwd())
        from .matching.importpath import from_import_path, is_import_path
        ckpt = open_checkpoint(args.file, format=args.format)
        if args.base is not None or ckpt.adapter is not None:
            from .adapters import check_adapter
            base = args.base if args.base is not None else args.model
            base = from_import_path(base, kwargs) if is_import_path(base) else base
            report = check_adapter(base, ckpt, numbers=not args.headers_only)
        else:
            from .matching.match import check
            model = from_import_path(args.model, kwargs)
            report = check(model, ckpt, data=not args.headers_only)
        print(report.to_json() if args.json else repr(report))
        return EXIT_OK if report.fits else EXIT_MISMATCH
    except WeightvizError as e:
        return _fail(str(e))
    except OSError as e:
        where = repr(e.filename) if e.filename else _files(args)
        return _fail(f"cannot read {where}: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - a bad file must not end in a traceback
        return _fail(f"unexpected {type(e).__name__} while reading {_files(args)}: {e} "
                     f"(this is a weightviz bug; please report it)")


def _files(args) -> str:
    return " and ".join(repr(f) for f in (getattr(args, "file", None), getattr(args, "base", None),
                                          getattr(args, "a", None), getattr(args, "b", None)) if f)


if __name__ == "__main__":
    sys.exit(main())
