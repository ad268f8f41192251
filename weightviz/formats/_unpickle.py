"""A recording unpickler: reads a pickle's structure without importing or calling anything from it.

Every global the pickle names is resolved by :meth:`RecordingUnpickler.find_class`
to a harmless stand-in from this module: torch's tensor-rebuilding functions
become :class:`TensorRecord` builders, classes become :class:`Recorded` objects
carrying their dotted name, a handful of plain builtins (``OrderedDict``, ``set``,
``bytearray`` ...) are the real constructors fed with data. A *call* of any other
global (the ``__reduce__`` gadget: ``os.system(...)``) is never made: it is noted
in ``calls`` and :meth:`load` raises :class:`UnsafeCheckpointError` naming it.

Used for TorchScript ``data.pkl`` and whole pickled models, where torch's own
``weights_only`` loader refuses, and for the safety pre-pass over torch files.
"""
from __future__ import annotations

import codecs
import collections
import io
import pickle
from dataclasses import dataclass

from ..errors import UnsafeCheckpointError, capped, message

# torch storage class names -> canonical dtype
STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
TORCH_DTYPES = {
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
    "int32", "int", "int16", "short", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
    "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "float8_e8m0fnu",
}
ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
           "int": "int32", "short": "int16"}
# torch rebuilders for tensors weightviz does not list (sparse, quantized, ...): recorded, not refused
TORCH_OPAQUE = {
    "_rebuild_sparse_tensor", "_rebuild_sparse_csr_tensor", "_rebuild_qtensor",
    "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass", "_rebuild_nested_tensor",
    "_rebuild_device_tensor_from_numpy", "_rebuild_xla_tensor", "_rebuild_mtia_tensor",
    "_rebuild_device_tensor_from_cpu_tensor",
}
NUMPY_OPAQUE = {"_reconstruct", "scalar", "ndarray", "dtype"}
from .limits import PICKLE_MAX_BYTEARRAY as MAX_BYTEARRAY  # noqa: E402


def _bytearray(*args):
    """bytearray from data only: ``bytearray(10**12)`` would allocate a terabyte."""
    if args and isinstance(args[0], int) and not 0 <= args[0] <= MAX_BYTEARRAY:
        raise pickle.UnpicklingError(f"bytearray of {args[0]} bytes requested")
    return bytearray(*args)


SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "bytearray": _bytearray, "complex": complex,
                 "slice": slice, "list": list, "dict": dict, "tuple": tuple}


@dataclass(eq=False)
class StorageRef:
    key: str
    dtype: str
    location: str
    numel: int


@dataclass(eq=False)
class TensorRecord:
    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple
    dtype: str
    parameter: bool = False

    def __setstate__(self, state):      # BUILD on a tensor (python-level attributes): ignored
        pass


@dataclass(eq=False)
class Opaque:
    """The result of a known-harmless rebuilder we do not interpret (sparse tensor, numpy array)."""
    what: str
    args: tuple = ()
    state: object = None

    def __setstate__(self, state):
        self.state = state


class Recorded:
    """An instance of a class named in the pickle; only its name and state are kept."""
    _global = "?"
    _unpickler = None

    def __new__(cls, *args, **kwargs):
        seen = cls._unpickler.classes
        if cls._global not in seen:
            seen.append(cls._global)
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        obj.__dict__["_state"] = None
        return obj

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __setattr__(self, name, value):     # BUILD with slot state ends up here
        self.__dict__.setdefault("_attrs", {})[name] = value

    def __call__(self, *args, **kwargs):    # calling an instance would run its class's code
        up = type(self)._unpickler
        up.calls.append(f"{type(self)._global}.__call__")
        return Call(f"{type(self)._global}.__call__", args, up.calls)

    @property
    def classname(self) -> str:
        return type(self)._global

    @property
    def state(self):
        return self.__dict__["_state"]

    def __repr__(self):
        return f"<{type(self)._global}>"


@dataclass(eq=False)
class Call:
    """A call the pickle asked for and that was NOT made (calling it again is recorded too:
    ``getattr(builtins, 'eval')(...)`` chains)."""
    func: str
    args: tuple = ()
    sink: list | None = None

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        name = f"{self.func}(...)"
        if self.sink is not None:
            self.sink.append(name)
        return Call(name, args, self.sink)

    def __getattr__(self, name):        # attribute chains on a never-made call stay recorded
        if name.startswith("__"):
            raise AttributeError(name)
        return Call(f"{self.func}.{name}", (), self.sink)


class _StubMeta(type):
    def __call__(cls, *args, **kwargs):          # REDUCE / INST / OBJ on an unknown global
        cls._unpickler.calls.append(cls._global)
        return Call(cls._global, args, cls._unpickler.calls)


def _torch_dtype(name: str) -> str:
    return ALIASES.get(name, name)


class RecordingUnpickler(pickle.Unpickler):
    REBUILDS = "tensors and plain containers"     # what a pickle may build (refusal wording)

    def __init__(self, file, *, persistent=None):
        super().__init__(file)
        self.globals: list[str] = []           # every global named, in order, once
        self.classes: list[str] = []           # globals instantiated as objects
        self.calls: list[str] = []             # globals it asked to call (never called)
        self.storages: dict[str, StorageRef] = {}
        self._stubs: dict[str, type] = {}
        self._persistent = persistent

    # --- globals -------------------------------------------------------------------
    def find_class(self, module, name):
        if module == "__builtin__":           # protocol-2 spelling of builtins
            module = "builtins"
        full = f"{module}.{name}"
        if full not in self.globals:
            self.globals.append(full)
        handler = self._handler(module, name)
        if handler is not None:
            return handler
        return self._stub(full)

    def _stub(self, full: str) -> type:
        if full not in self._stubs:
            self._stubs[full] = _StubMeta(full.rsplit(".", 1)[-1], (Recorded,),
                                          {"_global": full, "_unpickler": self})
        return self._stubs[full]

    def _handler(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module in ("builtins", "__builtin__") and name in SAFE_BUILTINS:
            return SAFE_BUILTINS[name]
        if module == "_codecs" and name == "encode":
            return _encode
        if module == "copyreg" and name == "_reconstructor":
            return self._reconstructor
        if module == "copyreg" and name == "__newobj__":
            return lambda cls, *args: self._new(cls, args)
        if module == "torch":
            if name in STORAGE_DTYPES:
                return _StorageType(STORAGE_DTYPES[name])
            if name.endswith("Storage") and name[:-7].lower() in TORCH_DTYPES:
                return _StorageType(_torch_dtype(name[:-7].lower()))   # Float8_e4m3fnStorage ...
            if name in TORCH_DTYPES:
                return _Dtype(_torch_dtype(name))
            if name == "Size":
                return lambda *a: tuple(a[0]) if a else ()
            if name == "device":
                return lambda *a: ":".join(map(str, a))
        if module == "torch.storage" and name in ("UntypedStorage", "_LegacyStorage"):
            return _StorageType("uint8")
        if module == "torch._utils":
            if name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
                return _rebuild_tensor
            if name == "_rebuild_parameter":
                return lambda data, *a: _as_parameter(data)
            if name == "_rebuild_parameter_with_state":
                return lambda data, *a: _as_parameter(data)
            if name in TORCH_OPAQUE:
                return lambda *a: Opaque(f"torch._utils.{name}", a)
        if module == "torch.serialization" and name == "_get_layout":
            return lambda layout: Opaque("torch.layout", (str(layout),))
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return lambda func, new_type, args, state: func(*args)
        if module == "torch.jit._pickle":
            if name == "restore_type_tag":
                return lambda value, tag=None: value
            if name.startswith("build_"):
                return lambda value: value
        if module.split(".")[0] == "numpy" and name in NUMPY_OPAQUE:
            return lambda *a: Opaque(f"{module}.{name}", a)
        return None

    def _new(self, cls, args=()):
        if isinstance(cls, type) and issubclass(cls, Recorded):
            return cls.__new__(cls, *args)
        if cls is collections.OrderedDict:
            return collections.OrderedDict()
        self.calls.append(getattr(cls, "_global", repr(cls)))
        return Call(getattr(cls, "_global", repr(cls)), args, self.calls)

    def _reconstructor(self, cls, base, state=None):
        obj = self._new(cls)
        if state is not None and isinstance(obj, Recorded):
            obj.__dict__["_state"] = state
        return obj

    # --- storages ------------------------------------------------------------------
    def persistent_load(self, pid):
        if self._persistent is not None:
            return self._persistent(pid)
        if (isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module"
                and isinstance(pid[1], type) and issubclass(pid[1], Recorded)):
            return pid[1]                 # legacy whole-model files: the class (its source ignored)
        if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:100]}")
        _, stype, key, location, numel = pid[:5]
        key = str(key)
        ref = self.storages.get(key)
        if ref is None:
            if not isinstance(numel, int) or numel < 0:
                raise pickle.UnpicklingError(f"storage {key} has a bad size {numel!r}")
            ref = self.storages[key] = StorageRef(key, stype.dtype, str(location), numel)
        if len(pid) > 5 and pid[5] is not None:        # legacy view: (view_key, offset, size)
            return ("view", ref, pid[5])
        return ref


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _Dtype:
    def __init__(self, name):
        self.name = name


def _encode(obj, encoding="latin1"):
    if isinstance(obj, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8"):
        return codecs.encode(obj, encoding)
    raise pickle.UnpicklingError("unexpected _codecs.encode arguments")


def _as_parameter(data):
    if isinstance(data, TensorRecord):
        data.parameter = True
    return data


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    view_offset = 0
    if isinstance(storage, tuple) and storage and storage[0] == "view":   # legacy storage views
        _, ref, view = storage
        view_offset = int(view[1]) if isinstance(view, tuple) and len(view) > 1 else 0
        storage = ref
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    dtype = storage.dtype
    # _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata)
    if len(rest) >= 3 and isinstance(rest[2], _Dtype):
        dtype = rest[2].name
    if (not all(isinstance(s, int) and s >= 0 for s in size)
            or not all(isinstance(s, int) and s >= 0 for s in stride)
            or len(size) != len(stride) or not isinstance(storage_offset, int) or storage_offset < 0):
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
    return TensorRecord(storage, storage_offset + view_offset, tuple(size), tuple(stride), dtype)


def record(data, *, persistent=None, what="file",
           unpickler: type[RecordingUnpickler] = RecordingUnpickler) -> tuple[object, RecordingUnpickler]:
    """Unpickle ``data`` (bytes or a binary stream) by recording only, with ``unpickler`` (a
    :class:`RecordingUnpickler` subclass may record a few more classes as data).

    Raises :class:`UnsafeCheckpointError` if the pickle asks to call anything but
    the known tensor/container rebuilders.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    up = unpickler(stream, persistent=persistent)
    try:
        obj = up.load()
    except Exception:
        if not up.calls:
            raise
        obj = None                 # it failed after asking for calls: refuse for those, below
    if up.calls:
        needs = list(dict.fromkeys(up.calls))
        raise UnsafeCheckpointError(message(
            f"{what} asks to call {capped(needs)} while loading, which would run code",
            expected=f"a pickle that only rebuilds {up.REBUILDS}",
            fix="do not load this file unless you trust its source; weightviz never runs it",
            got=f"globals named: {capped(up.globals)}"), needs=needs)
    return obj, up
