"""Any HDF5 file as a plain tree of datasets (the fallback after the Keras HDF5 reader).

Tensor names are dataset paths without the leading ``/``. The walk goes over
*links* (``visititems_links``), so every link is classified before anything is
opened: external links, datasets with external raw storage and virtual datasets
would read other files, and are refused with :class:`UnsafeCheckpointError`;
soft links are not followed (their targets are listed under their own path).
The walk is bounded in objects and depth. A dataset's declared size is checked
against the bytes the file really stores for it before any read; only HDF5's
built-in filters are accepted (no filter plugin is ever loaded). Contiguous,
unfiltered datasets get a :class:`DataLocation` (memory-mapped on request).
"""
from __future__ import annotations

import os
from math import prod

from .. import dtypes
from ..checkpoint import Checkpoint, DataLocation, TensorEntry
from ..errors import CorruptFileError, UnsafeCheckpointError, WeightvizError, message
from . import sniff as _sniff

from .limits import HDF5_MAX_OBJECTS as MAX_OBJECTS, HDF5_MAX_DEPTH as MAX_DEPTH  # noqa: E402
BUILTIN_FILTERS = {1, 2, 3, 4, 5, 6}       # deflate, shuffle, fletcher32, szip, nbit, scaleoffset
from .limits import HDF5_MAX_RATIO as MAX_RATIO, HDF5_MAX_UNSTORED  # noqa: E402
# what h5py raises on damaged files (SystemError: its lock's __exit__ on an HDF5 error)
H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, SystemError, AttributeError)


def sniff(head: bytes, path) -> bool:
    return _sniff.is_hdf5(head, str(path))


def _bad(path, what, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(path)} is a damaged HDF5 file: {what}",
        expected="a complete HDF5 file", fix="the file may be truncated; download or copy it again",
        got=got))


def _unsafe(path, name, what) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(message(
        f"{os.path.basename(path)}: /{name} {what}, which would read data from outside this file",
        expected="datasets stored inside the file",
        fix="weightviz does not follow external links, external storage or virtual datasets; "
            "do not trust this file, or copy the data into it", got=f"/{name}"), needs=[f"/{name}"])


def open_file(path: str):
    """``h5py.File`` opened read-only, with h5py/HDF5 errors turned into CorruptFileError."""
    import h5py
    try:
        return h5py.File(path, "r", locking=False)
    except H5_ERRORS as exc:
        raise _bad(path, "HDF5 cannot open it", got=f"{type(exc).__name__}: {exc}"[:200]) from None


def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    import h5py
    from h5py import h5i, h5o
    size = os.path.getsize(path)
    entries: dict[str, TensorEntry] = {}
    extras: dict = {}
    with open_file(path) as f:
        names: list[tuple[str, object]] = []

        def visit(name, link):
            if len(names) >= MAX_OBJECTS:
                return True       # stop: checked below
            names.append((name, link))
            return None
        try:
            f.visititems_links(visit)
        except H5_ERRORS as exc:
            raise _bad(path, "its group tree cannot be walked", got=f"{type(exc).__name__}: {exc}"[:200]) from None
        if len(names) >= MAX_OBJECTS:
            raise _bad(path, f"more than {MAX_OBJECTS:,} links; weightviz stops there")
        for name, link in names:
            if name.count("/") >= MAX_DEPTH:
                raise _bad(path, f"groups nest more than {MAX_DEPTH} levels deep", got=f"/{name[:200]}")
            if isinstance(link, h5py.ExternalLink):
                raise _unsafe(path, name, f"is an external link to {link.filename}:{link.path}")
            if isinstance(link, h5py.SoftLink):
                extras.setdefault("soft_links", {})[name] = link.path
                continue
            try:
                oid = h5o.open(f.id, name.encode("utf-8"))
                if h5i.get_type(oid) != h5i.DATASET:
                    continue
                entry = _dataset_entry(path, name, oid, size)
            except WeightvizError:
                raise
            except H5_ERRORS as exc:
                raise _bad(path, f"/{name} cannot be read", got=f"{type(exc).__name__}: {exc}"[:200]) from None
            if isinstance(entry, str):
                extras.setdefault("skipped_datasets", {})[name] = entry
            else:
                entries[name] = entry
    meta = {"container": "hdf5"}
    return Checkpoint(entries, "hdf5", path=path, metadata=meta, extras=extras)


def _dataset_entry(path, name, dsid, size):
    """A TensorEntry, or a string saying why the dataset is not listed (low-level h5py:
    one creation property list per dataset, no high-level objects: 2x faster listing)."""
    from h5py import h5d, h5s
    dt = dsid.get_type().dtype
    if dt.hasobject:
        # variable-length strings / sequences and references: nothing to plot, and their fill
        # value sits in the global heap, where a damaged size makes libhdf5 loop forever
        # (even H5Dget_create_plist converts it), so nothing more of them is touched
        return f"dtype {dt} is not numeric"
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise _unsafe(path, name, "is a virtual dataset")
    if dcpl.get_external_count() > 0:
        raise _unsafe(path, name, "keeps its data in external files")
    canon = dtypes.from_numpy(dt)
    if canon not in dtypes.ITEMSIZE_BITS or dt.fields is not None or dt.subdtype is not None:
        return f"dtype {dt} is not numeric"
    space = dsid.get_space()
    if space.get_simple_extent_type() == h5s.NULL:
        return "empty (null dataspace)"
    shape = space.shape
    nbytes = prod(shape) * dt.itemsize
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    unknown = [fid for fid in filters if fid not in BUILTIN_FILTERS]
    if unknown:
        return f"compressed with filter plugin id(s) {unknown}, which weightviz does not load"
    stored = dsid.get_storage_size()
    if filters:
        if nbytes > MAX_RATIO * stored + HDF5_MAX_UNSTORED:
            raise _bad(path, f"/{name} declares {nbytes:,} bytes but stores {stored:,} compressed",
                       got=f"shape {shape}, dtype {dt}")
    elif nbytes > stored and nbytes > HDF5_MAX_UNSTORED:
        raise _bad(path, f"/{name} declares {nbytes:,} bytes ({shape} x {dt}) but the file stores "
                         f"{stored:,} for it", got=f"{size:,}-byte file")
    offset = dsid.get_offset() if layout == h5d.CONTIGUOUS and not filters else None
    if offset is not None and nbytes and offset + nbytes <= size:
        return TensorEntry(name, shape, canon, location=DataLocation(path, offset, dt))
    return TensorEntry(name, shape, canon, loader=lambda: _read_dataset(path, name))


def _read_dataset(path, name):
    import numpy as np
    with open_file(path) as f:
        ds = f.get(name)
        if ds is None:
            raise _bad(path, f"/{name} disappeared")
        try:
            return np.asarray(ds[()])
        except H5_ERRORS as exc:
            raise _bad(path, f"/{name} cannot be read", got=f"{type(exc).__name__}: {exc}"[:200]) from None

