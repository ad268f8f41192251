"""Split GGUF models (llama.cpp's ``gguf-split``, ``GGUFWriter(split_max_tensors=...)``): one
model in files named ``<prefix>-00001-of-00003.gguf`` ..., each a complete GGUF file whose
``split.no`` / ``split.count`` keys say which part it is; the first holds the model's metadata.

Opening any part opens them all, so a listing is never silently a third of the model: the
parts are looked for in the opened file's own folder by llama.cpp's names (no other path is
ever formed; a part that is a link leading out of the folder is refused), each header is
parsed and validated as any GGUF file, and every part must agree on the count and say its
own number. A missing part is an error naming the files; ``shards=False`` lists one part.
"""
from __future__ import annotations

import os
import re

from ..errors import CorruptFileError, UnsafeCheckpointError, message
from . import _gguf_header as _header
from . import source as _source

NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
ALONE = "to list this part alone, open it with shards=False"


def count(h) -> int:
    """The number of parts a header declares (1 for a file that is not split)."""
    n = h.kv.get("split.count")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def parts(path: str, h, types: dict) -> list[tuple[str, object]]:
    """[(path, header)] of every part of the split model ``path`` belongs to, in order."""
    n, base = count(h), os.path.basename(path)
    m = NAME.match(base)
    if m is None or int(m["count"]) != n:
        raise CorruptFileError(message(
            f"{base} is part of a GGUF model split in {n} files, but its name does not say which",
            expected=f"llama.cpp's part names, <name>-0000k-of-{n:05d}.gguf, to find the other parts",
            fix=f"rename the parts as gguf-split wrote them; {ALONE}", got=base))
    names = [f"{m['prefix']}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    if _source.is_remote(path):         # the parts beside it on the same host and revision
        ps = [path if name == base else _source.sibling(path, name, what="part") for name in names]
        heads = _source.parallel(lambda p: h if p is path else _header.parse(p, types), ps)
        return [_check_part(p, ph, i, n) for i, (p, ph) in enumerate(zip(ps, heads))]
    folder = os.path.dirname(os.path.abspath(path))
    real_folder = os.path.realpath(folder)
    missing = [p for p in names if not os.path.isfile(os.path.join(folder, p))]
    if missing:
        raise CorruptFileError(message(
            f"{base} is part {int(m['no'])} of a GGUF model split in {n} files, and "
            f"{len(missing)} of them {'is' if len(missing) == 1 else 'are'} not beside it",
            expected=f"all {n} parts in one folder", fix=f"download the missing parts; {ALONE}",
            got="missing " + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")))
    out = []
    for i, name in enumerate(names):
        p = os.path.join(folder, name)
        if os.path.dirname(os.path.realpath(p)) != real_folder:
            raise UnsafeCheckpointError(message(
                f"part {name} of the split GGUF model is a link leading out of its folder",
                expected="every part a file in the folder of the part opened",
                fix="copy the parts into one folder", got=os.path.realpath(p)))
        out.append(_check_part(p, h if name == base else _header.parse(p, types), i, n))
    return out


def _check_part(p, ph, i: int, n: int):
    no = ph.kv.get("split.no")
    if count(ph) != n or no != i:
        raise CorruptFileError(message(
            f"{os.path.basename(p)} does not say it is part {i + 1} of {n} of the split GGUF model",
            expected=f"split.no = {i} and split.count = {n} in its header",
            fix="the parts come from different models or downloads: download them again",
            got=f"split.no = {no!r}, split.count = {ph.kv.get('split.count')!r}"))
    return p, ph
