"""A restricted unpickler for torch.load where torch has no `weights_only` (torch < 1.13: the 1.5, 1.8, 1.11 stacks)
or a weights_only loader that refuses plain values a checkpoint may hold (torch 2.1: sets, complex numbers, bytes).

A plain unpickle imports and calls whatever global the file names, so a crafted checkpoint can run a command
(`os.system`, `subprocess.Popen`, `builtins.exec` ... through `__reduce__`) the moment it is loaded. This module is
passed as `torch.load(path, pickle_module=safe_unpickle)`: torch builds its unpicklers from `Unpickler` (and reads the
legacy format's headers with `load`), and `Unpickler.find_class` admits only what a checkpoint or a torchvision
state_dict is made of: tensors, storages and torch's own tensor-rebuilding helpers, dtypes/devices/sizes,
OrderedDict, plain containers, numbers and strings. Anything else raises ForbiddenGlobal before it is imported, so
nothing named in the file is ever run.
"""
import _compat_pickle
import importlib
import pickle

import torch

# (module, name) pairs a checkpoint may name. Lists, dicts, tuples, strings, numbers, booleans and None need no
# global at all; sets and bytes (pickle protocol 2) and complex numbers do.
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "complex"),
    ("_codecs", "encode"),  # how protocol 2 stores a bytes object
    ("torch", "Size"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch.serialization", "_get_layout"),
}

# Values (not callables) torch pickles by name: torch.float32, torch.strided, torch.contiguous_format, ...
_TORCH_VALUE_TYPES = tuple(getattr(torch, name) for name in ("dtype", "layout", "memory_format", "qscheme")
                           if hasattr(torch, name))


class ForbiddenGlobal(pickle.UnpicklingError):
    """The file names a global outside the allowed set; `global_name` is its dotted name (e.g. posix.system)."""

    def __init__(self, global_name):
        super().__init__("refused to import {}: not a tensor, storage or plain value".format(global_name))
        self.global_name = global_name


def _is_storage_class(value):
    return isinstance(value, type) and value.__name__.endswith("Storage")


def allowed_global(module, name):
    """The object `module.name` if a checkpoint may contain it; ForbiddenGlobal otherwise (nothing is imported for a
    refused name beyond torch, which is already loaded)."""
    if (module, name) in _ALLOWED:
        return getattr(importlib.import_module(module), name)
    if module == "torch" and "." not in name:
        value = vars(torch).get(name)  # no lazy submodule import for a made-up name
        if _is_storage_class(value) or isinstance(value, _TORCH_VALUE_TYPES):
            return value
    raise ForbiddenGlobal("{}.{}".format(module, name))


class Unpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves globals through allowed_global (torch sets `persistent_load` on it)."""

    def find_class(self, module, name):
        return allowed_global(*python3_name(module, name))


def python3_name(module, name):
    """Pickle protocol 2 (torch.save's) stores builtins under their Python 2 names (`__builtin__.set`); map them
    back as pickle's own find_class does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def load(file, **kwargs):
    """pickle.load through Unpickler (torch's legacy format reads its header records this way)."""
    return Unpickler(file, **kwargs).load()
