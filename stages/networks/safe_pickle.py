"""Restricted unpicklers for the two pickle checkpoint formats of StyleGAN2 (networks.md 1.2, 1.3).

A checkpoint is untrusted input. These unpicklers resolve only the globals the
format needs and refuse every other reference with ``UnsafePickleError`` before
anything is called, so a pickle that would run a command or write a file fails
to load instead of executing.

- TF StyleGAN2 (``stylegan2-ffhq-config-f.pkl``): dnnlib ``Network`` objects become
  ``TFNetworkStub`` records of their state; numpy arrays unpickle normally.
- stylegan2-ada-pytorch (``network-snapshot-*.pkl``, ``ffhq.pkl``): persistent modules
  become ``PersistentStub`` records of their class name and ``__dict__``; tensors are
  rebuilt with torch's own reducers, and serialized storages go through
  ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

from stages.errors import CheckpointError


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """The pickle references a global outside what its checkpoint format needs (a checkpoint error: fatal)."""


class TFNetworkStub:
    """State of a ``dnnlib.tflib.network.Network``: name, kwargs, components, variables."""

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError("dnnlib Network state is not a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))

    @property
    def components(self) -> dict[str, TFNetworkStub]:
        return dict(self.state.get("components", {}))

    @property
    def variables(self) -> list[tuple[str, Any]]:
        return list(self.state.get("variables", []))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs", {}))


class PersistentStub:
    """A stylegan2-ada-pytorch persistent object: its class name and pickled ``__dict__``."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise UnsafePickleError("persistent object metadata is not a dict with a 'state' dict")
        self.class_name = str(meta.get("class_name", ""))
        self.state: dict = meta["state"]

    def tensors(self) -> dict[str, Any]:
        """Parameters and buffers flattened with module-path keys (``synthesis.b4.conv1.weight``)."""
        flat: dict[str, Any] = {}
        _flatten_module_state(self.state, "", flat)
        return flat


class InertStub:
    """Stand-in for other ADA training classes (e.g. the augment pipe): records its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _flatten_module_state(state: dict, prefix: str, out: dict[str, Any]) -> None:
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None:
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        child_state = child.state if isinstance(child, (PersistentStub, InertStub)) else getattr(child, "__dict__", {})
        _flatten_module_state(child_state if isinstance(child_state, dict) else {}, f"{prefix}{name}.", out)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import importlib

    import numpy as np

    try:  # numpy >= 2 moved the core package; pickles name either path
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    reconstruct, scalar = multiarray._reconstruct, multiarray.scalar
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "_reconstruct")] = reconstruct
        found[(module, "scalar")] = scalar
    return found


# Builtins that pickles of plain containers legitimately reference (protocol 2 bytes, ordered dicts).
_CONTAINER_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


def _codecs_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it, restricted to str input."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode called with unexpected arguments")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only an explicit table of globals (plus per-format families); refuses the rest."""

    format_name = "pickle"

    def __init__(self, file: BinaryIO, allowed: dict[tuple[str, str], Any]):
        super().__init__(file)
        self._allowed = allowed

    def family(self, module: str, name: str) -> Any:
        """Globals allowed by module family rather than by exact name; None if refused."""
        return None

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            found = self.family(module, name)
        if found is None:
            raise UnsafePickleError(
                f"refusing to load {self.format_name} checkpoint: it references {module}.{name}, "
                f"which is not part of the {self.format_name} format")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing to load {self.format_name} checkpoint: unexpected persistent id")


class TFStyleGANUnpickler(_RestrictedUnpickler):
    """Unpickler for NVlabs/stylegan2 TF pickles: Network stubs, numpy arrays, dict-like dnnlib classes."""

    format_name = "TF StyleGAN2"

    def __init__(self, file: BinaryIO):
        allowed = {**_numpy_globals(), **_CONTAINER_GLOBALS, ("_codecs", "encode"): _codecs_encode,
                   ("dnnlib.tflib.network", "Network"): TFNetworkStub}
        super().__init__(file, allowed)

    def family(self, module: str, name: str) -> Any:
        # dnnlib's EasyDict and friends are plain dict subclasses: a dict carries the same data.
        if module == "dnnlib" or module.startswith("dnnlib."):
            return dict
        return None


def _safe_storage_from_bytes(data: bytes) -> Any:
    """Replacement for ``torch.storage._load_from_bytes`` that refuses non-tensor payloads."""
    import torch

    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("serialized storage is not bytes")
    return torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")


def _torch_globals() -> dict[tuple[str, str], Any]:
    import torch
    import torch._utils as tu

    found: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _safe_storage_from_bytes,
        ("torch", "Size"): torch.Size,
    }
    for name in ("float32", "float16", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        found[("torch", name)] = getattr(torch, name)
    return found


def _reconstruct_persistent_obj(meta: dict) -> PersistentStub:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: never executes ``module_src``."""
    return PersistentStub(meta)


class ADAUnpickler(_RestrictedUnpickler):
    """Unpickler for stylegan2-ada-pytorch pickles: persistent-module stubs and torch tensors."""

    format_name = "stylegan2-ada-pytorch"

    def __init__(self, file: BinaryIO):
        allowed = {**_numpy_globals(), **_CONTAINER_GLOBALS, **_torch_globals(),
                   ("_codecs", "encode"): _codecs_encode,
                   ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj}
        super().__init__(file, allowed)

    def family(self, module: str, name: str) -> Any:
        if module == "dnnlib" or module.startswith("dnnlib."):
            return dict
        # Other classes of the ADA training code (never imported): inert records.
        if module.split(".")[0] in ("torch_utils", "training") and name[:1].isupper():
            return InertStub
        return None


def _load(file: BinaryIO | str, factory: Callable[[BinaryIO], pickle.Unpickler]) -> Any:
    if isinstance(file, str):
        with open(file, "rb") as handle:
            return factory(handle).load()
    return factory(file).load()


def load_tf_pickle(file: BinaryIO | str) -> Any:
    """Unpickle a TF StyleGAN2 pickle (normally the tuple ``(G, D, Gs)`` of ``TFNetworkStub``)."""
    return _load(file, TFStyleGANUnpickler)


def load_ada_pickle(file: BinaryIO | str) -> Any:
    """Unpickle a stylegan2-ada-pytorch pickle (a dict with ``G_ema`` as a ``PersistentStub``)."""
    return _load(file, ADAUnpickler)


def sniff_pickle_format(file: str) -> str:
    """'tf' or 'ada' from the globals a pickle references, without unpickling it."""
    import pickletools

    with open(file, "rb") as handle:
        data = handle.read()
    pending: list[str] = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pending = (pending + [str(arg)])[-2:]
        if opcode.name == "GLOBAL" or (opcode.name == "STACK_GLOBAL" and len(pending) == 2):
            module = str(arg).split(" ")[0] if opcode.name == "GLOBAL" else pending[0]
            if module.startswith("dnnlib.tflib"):
                return "tf"
            if module.startswith("torch_utils") or module.startswith("torch."):
                return "ada"
    raise UnsafePickleError(f"{file}: not a TF StyleGAN2 or stylegan2-ada-pytorch pickle")


def load_torch_with_numpy(file: BinaryIO | str) -> Any:
    """``torch.load(weights_only=True)`` of a torch-saved dict that also holds numpy arrays (object arrays too).

    FFHQ-UV's preprocessed fitting inputs store ``trans_params`` as a numpy object array; torch's weights-only
    unpickler refuses numpy globals unless they are listed, so this allows exactly the numpy reconstruction
    globals of ``_numpy_globals`` (plus the dtype classes they name) and nothing else.
    """
    import codecs

    import numpy as np
    import torch

    allowed = list({id(v): v for v in _numpy_globals().values()}.values())
    allowed += [codecs.encode, *{type(np.dtype(code)) for code in "O?bhilqBHILQefdgFDG"}]
    with torch.serialization.safe_globals(allowed):
        return torch.load(file, map_location="cpu", weights_only=True)


class ScriptModuleStub:
    """A TorchScript module object (``__torch__.*`` class) as pickled in ``data.pkl``: only its attribute dict.

    Pickles build it with ``NEWOBJ`` (no arguments) and then ``__setstate__``; the class name is on the subclass
    ``TorchScriptUnpickler`` makes per referenced class.
    """

    class_name = ""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError("TorchScript module state is not a dict")
        self.attributes = state


_STORAGE_DTYPES = {"FloatStorage": "float32", "HalfStorage": "float16", "DoubleStorage": "float64",
                   "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                   "ByteStorage": "uint8", "BoolStorage": "bool"}


class _StorageType:
    def __init__(self, name: str):
        self.dtype_name = _STORAGE_DTYPES[name]


class TorchScriptUnpickler(_RestrictedUnpickler):
    """``data.pkl`` of a TorchScript zip: ``__torch__.*`` classes become ``ScriptModuleStub``s (their code in the
    archive is never compiled or run); storages are read from the archive's raw ``data/<key>`` records."""

    format_name = "TorchScript"

    def __init__(self, file: BinaryIO, archive: Any, prefix: str):
        super().__init__(file, {**_CONTAINER_GLOBALS, **_torch_globals()})
        self._archive, self._prefix = archive, prefix

    def family(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptModuleStub,), {"class_name": f"{module}.{name}"})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        # TorchScript's typed-list builders (int lists of conv strides, ...): plain data, kept as lists.
        if module == "torch.jit._pickle" and name.startswith("build_") and name.endswith("list"):
            return list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, _type: value
        return None

    def persistent_load(self, pid: Any) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError("refusing to load TorchScript archive: unexpected persistent id")
        dtype = getattr(torch, pid[1].dtype_name)
        raw = bytearray(self._archive.read(f"{self._prefix}data/{pid[2]}"))
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def load_torchscript_tensors(path: str) -> dict[str, Any]:
    """Every tensor attribute of a TorchScript file (``torch.jit.save`` zip) by dotted name, without executing it.

    NVIDIA's LPIPS ``vgg16.pt`` is such a program: its weights are read as data; its code is never loaded.
    """
    import zipfile

    import torch

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if not names:
            raise UnsafePickleError(f"{path}: not a TorchScript archive (no <name>/data.pkl)")
        prefix = names[0][: -len("data.pkl")]
        with archive.open(names[0]) as handle:
            root = TorchScriptUnpickler(handle, archive, prefix).load()
    out: dict[str, Any] = {}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, torch.Tensor):
            out[name] = node
        elif isinstance(node, ScriptModuleStub):
            for key, value in node.attributes.items():
                walk(value, f"{name}.{key}" if name else str(key))

    walk(root, "")
    return out
