"""HDF5 variable-length string attributes are read by a child process (formats/_h5_sandbox.py):
same values as h5py's own, never read in-process, a worker that hangs in libhdf5 (a damaged
global heap) is stopped and the file refused, a dead or babbling worker is a clear error, and
nothing of the worker reaches our stdout/stderr."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5py import h5a, h5t

import weightviz as wv
from weightviz.errors import CorruptFileError
from weightviz.formats import _h5_sandbox as sb
from weightviz.formats import keras_safe_h5 as sh

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
KERAS_H5 = sorted(glob.glob(str(FIX / "keras_io" / "*.h5"))) + [str(FIX / "keras_models" / "mha.weights.h5")]


def _vlen_attrs(f):
    objs = [f]
    f.visititems(lambda _, o: objs.append(o))
    for o in objs:
        for k in o.attrs:
            tid = h5a.open(o.id, k.encode()).get_type()
            if isinstance(tid, h5t.TypeStringID) and tid.is_variable_str():
                yield o, k


def _same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert [type(x) for x in a.ravel()] == [type(x) for x in b.ravel()]
        assert a.tolist() == b.tolist()
    elif isinstance(a, h5py.Empty):
        assert a.dtype == b.dtype
    else:
        assert a == b


@pytest.fixture
def fresh():
    """A clean worker before and after (tests below swap the worker's source)."""
    sb._shutdown()
    yield
    sb._shutdown()


def _heap_damaged(tmp_path):
    from tests.hostile.cases_size import h5_heap_size
    h5_heap_size(tmp_path)
    return tmp_path / "model.h5"


@pytest.fixture(params=["ctypes", "h5py"])
def backend(request, monkeypatch):
    """The worker reading through libhdf5 itself (ctypes, the default where h5py's library is
    found) or through h5py (a wheel without one, a version that does not match)."""
    sb._shutdown()
    if request.param == "h5py":
        monkeypatch.setattr(sb, "_libhdf5", lambda: ())
    yield request.param
    sb._shutdown()


@pytest.mark.parametrize("path", KERAS_H5, ids=[os.path.basename(p) for p in KERAS_H5])
def test_values_equal_h5py_on_real_keras_files(path, backend):
    with h5py.File(path, "r") as f:
        for o, k in _vlen_attrs(f):        # Keras writes its strings variable-length
            _same(o.attrs[k], sh.attr(o, k, path=path))
    sb.release()


def test_values_equal_h5py_for_odd_strings(tmp_path, backend):
    p = tmp_path / "odd.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("grüppe/ü")
        for o in (f, g):
            o.attrs.create("uni", data="héllo wörld ✓ 🙂", dtype=h5py.string_dtype())
            o.attrs.create("ascii", data=["a", "bc", ""], dtype=h5py.string_dtype("ascii"))
            o.attrs.create("grid", data=np.array([["a", "b"], ["c", "d"]], dtype=object), dtype=h5py.string_dtype())
            o.attrs.create("none", data=np.array([], dtype=object), dtype=h5py.string_dtype())
            o.attrs.create("empty", data=h5py.Empty(h5py.string_dtype()))
            o.attrs.create("badutf8", data=b"\xff\xfeabc", dtype=h5py.string_dtype())
            o.attrs.create("näme", data="x" * 100_000, dtype=h5py.string_dtype())
    with h5py.File(p, "r") as f:
        pairs = list(_vlen_attrs(f))
        assert len(pairs) == 14
        for o, k in pairs:
            _same(o.attrs[k], sb.read_attr(o, k, path=str(p)))
        assert sb._WORKER[0].h5py is (backend == "h5py")          # h5py never imported there
    sb.release()


def test_the_worker_finds_h5pys_own_libhdf5_and_checks_its_version(fresh, monkeypatch):
    lib, version = sb._libhdf5()
    assert version == h5py.version.hdf5_version and os.path.isfile(lib)
    assert os.path.basename(lib).startswith(("libhdf5", "hdf5")) and "_hl" not in os.path.basename(lib)
    # without /proc (macOS, Windows): the copy a wheel ships beside h5py, if there is one
    beside = sb._find_libhdf5(h5py, version, maps="/nonexistent")
    assert beside == () or os.path.samefile(beside[0], lib) or "h5py" in beside[0]
    # a library of another version is not used: the worker imports h5py, and reads the same
    monkeypatch.setattr(sb, "_libhdf5", lambda: (lib, "0.0.1"))
    path = str(FIX / "keras_io" / "k3_legacy.h5")
    with h5py.File(path, "r") as f:
        assert sb.read_attr(f, "keras_version", path=path) == f.attrs["keras_version"]
    assert sb._WORKER[0].h5py is True


@pytest.mark.parametrize("name, ok", [
    ("libhdf5-9e18f0c6.so.320.0.0", True), ("libhdf5.so.310", True), ("libhdf5_serial.so.103", True),
    ("libhdf5.310.dylib", True), ("hdf5.dll", True), ("libhdf5_hl-69da89c9.so.320.0.0", False),
    ("libhdf5_hl.so.310", False), ("libhdf5_cpp.so.310", False), ("libhdf5_fortran.so", False)])
def test_only_libhdf5_itself_is_taken_for_the_worker(name, ok):
    assert bool(sb._LIB_NAME.match(name)) is ok


def test_a_keras_archive_member_is_read_through_h5py_in_the_worker(fresh):
    """A window of a file or a zip member is opened by h5py (imported by the first such
    request, its start not counted in the attribute timeout); plain files need no h5py."""
    wv.open(str(FIX / "keras_io" / "k3_model.weights.h5"))
    assert sb._WORKER[0].h5py is False
    ck = wv.open(str(FIX / "keras_io" / "k3_model.keras"))
    assert len(ck) > 0 and sb._WORKER[0].h5py is True


def test_keras_readers_never_read_vlen_strings_in_process(monkeypatch):
    """Every vlen attribute goes to the worker: the parent's h5py never converts one."""
    real, seen, sent = h5py.AttributeManager.__getitem__, [], []

    def guarded(self, name):
        tid = h5a.open(self._id, name.encode()).get_type()
        if isinstance(tid, h5t.TypeStringID) and tid.is_variable_str():
            seen.append(name)
        return real(self, name)
    read = sb.read_attr
    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", guarded)
    monkeypatch.setattr(sb, "read_attr", lambda *a, **k: sent.append(a[1]) or read(*a, **k))
    for p in KERAS_H5 + [str(FIX / "keras_io" / "k3_model.keras")]:
        assert len(wv.open(p)) > 0
    assert seen == []
    assert {"name", "layer_names", "weight_names"} <= set(sent)


def test_worker_lets_go_of_the_file_after_each_read():
    wv.open(str(FIX / "keras_io" / "k3_model.weights.h5"))
    w = sb._WORKER[0]
    assert w is not None and w.open_file is False
    fd_dir = f"/proc/{w.proc.pid}/fd"
    if os.path.isdir(fd_dir):
        targets = [os.readlink(os.path.join(fd_dir, n)) for n in os.listdir(fd_dir)]
        assert not [t for t in targets if t.endswith(".h5")]


def test_a_global_heap_that_hangs_libhdf5_is_stopped_and_refused(tmp_path, monkeypatch, backend):
    bad = _heap_damaged(tmp_path)
    good = str(FIX / "keras_io" / "k2_model.h5")
    wv.open(good)
    before = sb._WORKER[0]
    monkeypatch.setattr(sb, "HDF5_ATTRIBUTE_TIMEOUT_S", 1)
    with pytest.raises(CorruptFileError, match=r"libhdf5 did not finish reading the HDF5 attribute "
                                               r"'weight_names' of '/dense' in .*model\.h5 within 1 s"):
        wv.open(str(bad))
    assert before.proc.wait(5) is not None          # killed, not left spinning
    assert sb._WORKER[0] is None
    asks = []
    real = sb._Worker.ask
    monkeypatch.setattr(sb._Worker, "ask", lambda self, req, t: asks.append(req) or real(self, req, t))
    with pytest.raises(CorruptFileError, match="not tried again"):   # at once, no second hang
        wv.open(str(bad))
    assert [r for r in asks if r.get("op") != "close"] == []        # the worker was not asked
    assert len(wv.open(good)) > 0                   # a fresh worker
    assert sb._WORKER[0] is not None and sb._WORKER[0].proc.pid != before.proc.pid


FAKES = {   # worker sources standing in for the real one: (source, expected message)
    "dies": ("import sys; print('{\"ready\": true}', flush=True); sys.stdin.readline(); sys.exit(3)",
             r"failed: it died"),
    "garbage": ("import sys; print('{\"ready\": true}', flush=True); sys.stdin.readline(); "
                "print('\\x80 not json', flush=True); sys.stdin.readline()", r"failed: its answer was not JSON"),
    "wrong": ("import sys; print('{\"ready\": true}', flush=True); sys.stdin.readline(); "
              "print('[1, 2]', flush=True); sys.stdin.readline()", r"failed: its answer was not a reply"),
    "malformed": ("import sys; print('{\"ready\": true}', flush=True); sys.stdin.readline(); "
                  "print('{\"ok\": {\"shape\": [3], \"flat\": [1]}}', flush=True); sys.stdin.readline()",
                  r"failed: its answer was malformed"),
    "huge": ("import sys; print('{\"ready\": true}', flush=True); sys.stdin.readline(); "
             "print('{\"ok\": {\"scalar\": \"' + 'x' * 5000 + '\"}}', flush=True); sys.stdin.readline()",
             r"failed: its answer was too long"),
    "sleeps": ("import sys, time; print('{\"ready\": true}', flush=True); sys.stdin.readline(); time.sleep(60)",
               r"did not finish .* within 0\.5 s"),
}


@pytest.mark.parametrize("kind", list(FAKES))
def test_a_bad_worker_is_a_clear_error_and_is_replaced(kind, fresh, monkeypatch, tmp_path):
    src, want = FAKES[kind]
    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "w") as f:
            f.attrs.create("s", data="hello", dtype=h5py.string_dtype())
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    monkeypatch.setattr(sb, "WORKER_SOURCE", src)
    monkeypatch.setattr(sb, "REPLY_MAX", 4096)
    with h5py.File(a, "r") as f:
        with pytest.raises(CorruptFileError, match=want):
            sb.read_attr(f, "s", path=a, timeout=0.5)
    fake = sb._WORKER[0]
    assert fake is None                             # dropped (and killed): the next read starts afresh
    monkeypatch.undo()
    with h5py.File(b, "r") as f:
        assert sb.read_attr(f, "s", path=b) == "hello"


def test_a_worker_that_cannot_start_is_a_weightviz_error(fresh, monkeypatch, tmp_path):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        f.attrs.create("s", data="hello", dtype=h5py.string_dtype())
    monkeypatch.setattr(sb, "WORKER_SOURCE", "raise SystemExit(1)")
    with h5py.File(p, "r") as f:
        with pytest.raises(wv.WeightvizError, match="cannot start the process") as e:
            sb.read_attr(f, "s", path=str(p))
    assert not isinstance(e.value, CorruptFileError)


def test_reads_from_many_threads_agree():
    path = str(FIX / "keras_io" / "k3_legacy.h5")
    with h5py.File(path, "r") as f:
        want = {k: f.attrs[k] for o, k in _vlen_attrs(f) if o.name == "/"}
    assert {"model_config", "keras_version", "backend"} <= set(want)
    errors: list = []

    def work():
        try:
            for _ in range(20):
                with h5py.File(path, "r") as f:
                    for k, v in want.items():
                        _same(v, sb.read_attr(f, k, path=path))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


CHILD = """
import weightviz as wv
from weightviz.formats import _h5_sandbox as sb
sb.HDF5_ATTRIBUTE_TIMEOUT_S = 1
for p in {paths!r}:
    try:
        wv.open(p)
    except wv.WeightvizError as e:
        assert "did not finish" in str(e) or "holds object values" in str(e), e
"""


def _vlen_fill_damaged(d: Path):
    """A plain and a Keras HDF5 file whose vlen-string dataset has a fill value in a damaged
    global heap (the hostile catalog's files): libhdf5 loops forever as soon as the
    dataset's creation property list is asked for."""
    from tests.hostile.cases_size import h5_vlen_fill_heap
    out = []
    for name, keras in (("plain", False), ("keras", True)):
        (d / name).mkdir()
        h5_vlen_fill_heap(keras)(d / name)
        out.append(d / name / "model.h5")
    return tuple(out)


def test_nothing_hangs_or_prints_in_a_fresh_process(tmp_path):
    """Real Keras files, the damaged heap behind an attribute and behind a dataset's fill value:
    every open ends quickly (no hang) and the worker writes nothing to our stdout/stderr."""
    (tmp_path / "heap").mkdir()
    plain, keras = _vlen_fill_damaged(tmp_path)
    paths = KERAS_H5[:3] + [str(FIX / "keras_io" / "k3_model.keras"), str(_heap_damaged(tmp_path / "heap")),
                            str(plain), str(keras)]
    r = subprocess.run([sys.executable, "-c", CHILD.format(paths=paths)], capture_output=True, timeout=60,
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_vlen_datasets_are_skipped_by_the_plain_hdf5_reader(tmp_path):
    plain, keras = _vlen_fill_damaged(tmp_path)
    ck = wv.open(str(plain), format="hdf5")
    assert list(ck) == ["dense/kernel:0"]
    assert set(ck.extras["skipped_datasets"]) == {"dense/s:0", "t"}
    with pytest.raises(CorruptFileError, match="holds object values"):
        wv.open(str(keras))


def test_a_deflated_keras_archive_is_read_by_member(tmp_path):
    src = FIX / "keras_io" / "k3_model.keras"
    dst = tmp_path / "deflated.keras"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for n in z.namelist():
            out.writestr(n, z.read(n))
    a, b = wv.open(str(src)), wv.open(str(dst))
    assert list(a) == list(b) and a.groups == b.groups
    assert any("/" in n for n in a)


def test_prefetch_reads_many_objects_in_one_round_trip(tmp_path, monkeypatch):
    p = tmp_path / "many.h5"
    with h5py.File(p, "w") as f:
        for i in range(5):
            f.create_group(f"g{i}").attrs.create("name", data=f"layer ü{i}", dtype=h5py.string_dtype())
        f.create_group("fixed").attrs["name"] = np.bytes_(b"fixed")       # not vlen: read in-process
        f.create_group("none")                                            # no such attribute
    asks = []
    real = sb._Worker.ask
    monkeypatch.setattr(sb._Worker, "ask", lambda self, req, t: asks.append(req.get("objs")) or real(self, req, t))
    with h5py.File(p, "r") as f:
        # a fixed-length one first, as Keras 3 writes for an InputLayer's empty weight_names
        objs = [f[k] for k in ("fixed", "g0", "g1", "none", "g2", "g3", "g4")]
        sh.prefetch(objs, "name", path=str(p))
        assert asks == [["/g0", "/g1", "/g2", "/g3", "/g4"]]      # only the vlen strings go out
        got = [sh.attr(o, "name", path=str(p)) for o in objs]
        assert got == [np.bytes_(b"fixed"), "layer ü0", "layer ü1", None, "layer ü2", "layer ü3", "layer ü4"]
        assert len(asks) == 1                     # every later read came from the batch
    sb.release()


def test_the_file_identity_is_kept_only_within_one_reader_call(tmp_path):
    """HDF5 file numbers are reused once a file closes: a cached identity must not outlive
    the reader call, or the worker would read another file's attributes."""
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"f{i}.h5")
        with h5py.File(paths[-1], "w") as f:
            f.attrs.create("name", data=f"file {i}", dtype=h5py.string_dtype())
    for i, p in enumerate(paths):              # one after another: the same file number
        with h5py.File(p, "r") as f:
            assert sh.attr(f, "name", path=str(p)) == f"file {i}"
        assert sb._FILES == {}                 # outside a reader call: nothing kept
        with h5py.File(p, "r") as f, sb.reading():
            assert sh.attr(f, "name", path=str(p)) == f"file {i}"
            assert len(sb._FILES) == 1
        assert sb._FILES == {}


def test_an_attribute_of_more_strings_than_the_worker_allocates_for_is_refused(tmp_path, backend):
    """A pointer per string is allocated before libhdf5 reads them: beyond MAX_ITEMS the worker
    refuses (a crafted dataspace could declare billions), whichever way it reads."""
    p = tmp_path / "many.h5"
    with h5py.File(p, "w", libver="latest") as f:       # dense attribute storage: no 64 KiB cap
        f.attrs.create("s", data=np.array([""] * 1_000_001, dtype=object), dtype=h5py.string_dtype())
        f.attrs.create("t", data=np.array(["ok"] * 1_000, dtype=object), dtype=h5py.string_dtype())
    with h5py.File(p, "r") as f:
        with pytest.raises(CorruptFileError, match="more than 1000000 strings"):
            sb.read_attr(f, "s", path=str(p))
        assert sb.read_attr(f, "t", path=str(p)).tolist() == ["ok"] * 1_000      # the worker goes on
    sb.release()
