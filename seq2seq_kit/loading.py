"""Checkpoint files: reading transformers' weight formats from a local directory into a module, and writing them.

Reads model.safetensors, a sharded model.safetensors.index.json, pytorch_model.bin (weights_only) or a sharded
pytorch_model.bin.index.json (safetensors preferred), by tensor name without the "model." prefix. The model is
built on the meta device, allocated once at its final dtype and device, and every tensor is copied straight into
place from the memory-mapped file, so no second full copy of the weights is made. With `replace_linear` (int8),
each linear layer is loaded on its own and replaced at once, so its float32 weights are gone before the next's.

Which checkpoint tensors make which module tensor is the model's business, asked through its methods:
  model_cls(config)                  builds the module (here on the meta device)
  model.checkpoint_sources(ckpt)     {our tensor name: [checkpoint names stacked on dim 0]}, or raises
  model.tie_weights()                re-ties shared tensors after allocation
  model.checkpoint_loaded(ckpt, sources)   fix-ups after the copies
  model.checkpoint_tensors(), model.checkpoint_config()   what `save` writes
Hub ids are resolved before this module is called (seq2seq_kit/modeling.py).
"""

from __future__ import annotations

import json
import math
import mmap
from pathlib import Path, PurePosixPath

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import dtype_name
from .hub import WEIGHT_FILES
from .jsonfile import read_json, write_json, writing
from .user_warnings import warn

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES, "int8")   # what from_pretrained(dtype=...) takes by name (int8: CPU only)
# float8 weights are read and upcast to the dtype loaded, as transformers 5 loads them without a quantization_config
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                      "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


# ---- reading checkpoint files -----------------------------------------------------------------------------------

def unread_dtype(path: Path, key: str, stored: str, read: str) -> ValueError:
    """The error for a weight file's tensor of a dtype seq2seq_kit does not read (both file kinds name their own)."""
    return ValueError(f"{path}: {key!r} has dtype {stored}; seq2seq_kit reads {read} weights: save the checkpoint in "
                      "float32, float16 or bfloat16")


class _SafetensorsFile:
    """A memory-mapped safetensors file. Each tensor is a zero-copy view of the mapping; once it has been copied
    into the model, `release` drops its pages from this process's resident memory, so loading never holds
    the file and the model in RAM together (peak ~ model + one tensor)."""

    def __init__(self, path: Path):
        self.path = path
        try:   # safetensors validates the header (offsets, dtypes, file fully covered)
            with safe_open(str(path), framework="pt") as f:
                f.keys()
            with open(path, "rb") as f:
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)   # private: never written back
        except Exception as e:  # noqa: BLE001 (SafetensorError, OSError, ValueError for an empty file)
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None
        n = int.from_bytes(self.map[:8], "little")
        self.header = json.loads(self.map[8:8 + n])
        self.header.pop("__metadata__", None)
        # safe_open().keys() order (sorted by name), which transformers' dtype="auto" reads: not the raw header's
        self.header = dict(sorted(self.header.items()))
        self.data_start = 8 + n

    def keys(self):
        return self.header.keys()

    def shape(self, key: str) -> tuple:
        return tuple(self.header[key]["shape"])

    def dtype(self, key: str) -> torch.dtype | None:
        return SAFETENSORS_DTYPES.get(self.header[key]["dtype"])

    def tensor(self, key: str) -> torch.Tensor:
        entry, dtype = self.header[key], self.dtype(key)
        if dtype is None:
            raise unread_dtype(self.path, key, entry["dtype"], ", ".join(SAFETENSORS_DTYPES))
        begin, end = entry["data_offsets"]
        count = (end - begin) // dtype.itemsize
        if count == 0:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(self.map, dtype=dtype, count=count, offset=self.data_start + begin).view(entry["shape"])

    def release(self, key: str) -> None:
        begin, end = (self.data_start + o for o in self.header[key]["data_offsets"])
        start = begin - begin % mmap.PAGESIZE
        if end > start:
            self.map.madvise(mmap.MADV_DONTNEED, start, end - start)


class _TorchFile:
    def __init__(self, path: Path):
        self.path = path
        try:   # memory-mapped when the file is in torch's zip format (all files since torch 1.6)
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None
        except Exception as e:  # noqa: BLE001 (pickle errors, EOFError, ...)
            raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None
        if not isinstance(state, dict) or not any(isinstance(t, torch.Tensor) for t in state.values()):
            raise ValueError(f"{path} does not hold a state dict of tensors")
        # entries that are no tensor (a fairseq-era "version": 2) are no weights: passed over, as transformers does
        self.state = {key: t for key, t in state.items() if isinstance(t, torch.Tensor)}

    def keys(self):
        return self.state.keys()

    def shape(self, key: str) -> tuple:
        return tuple(self.state[key].shape)

    def dtype(self, key: str) -> torch.dtype | None:
        dtype = self.state[key].dtype
        return dtype if dtype in SAFETENSORS_DTYPES.values() else None

    def tensor(self, key: str) -> torch.Tensor:
        """The tensor as stored; one of a dtype not read (int, bool, complex) is refused, as in a safetensors
        file, rather than cast (copy_ would round, truncate or drop an imaginary part without a word)."""
        tensor = self.state[key]
        if self.dtype(key) is None:
            raise unread_dtype(self.path, key, dtype_name(tensor.dtype),
                               ", ".join(map(dtype_name, SAFETENSORS_DTYPES.values())))
        return tensor

    def release(self, key: str) -> None:
        pass


class Checkpoint:
    """The tensors of a checkpoint directory, by name without the "model." prefix, across shards."""

    def __init__(self, root: Path):
        self.files = weight_files(root)
        self.index_dtype = _index_dtype(root)   # a shard index's metadata "dtype" (transformers' dtype="auto" reads it)
        self.where: dict[str, tuple] = {}       # name -> (file, key as stored)
        for path in self.files:
            f = (_SafetensorsFile if path.suffix == ".safetensors" else _TorchFile)(path)
            for key in f.keys():
                name = key.removeprefix("model.")
                if name in self.where:
                    raise ValueError(f"{path}: weight {key!r} appears twice in the checkpoint "
                                     f"(also in {self.where[name][0].path})")
                self.where[name] = (f, key)

    @property
    def description(self) -> str:
        """The weight files, for messages."""
        return ", ".join(p.name for p in self.files)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def names(self) -> set[str]:
        return set(self.where)

    def first_floating(self) -> str | None:
        """The first floating-point tensor (of a dtype read: SAFETENSORS_DTYPES) of the first weight file in the order
        transformers reads it (a safetensors file's by name, a .bin file's as saved), float8 ones passed over as
        transformers' get_state_dict_dtype passes them (the first of them where all are): what its dtype="auto"
        takes when neither config.json nor a shard index names a dtype; or None."""
        first = self.files[0]
        floating = [name for name, (f, key) in self.where.items() if f.path == first and f.dtype(key) is not None]
        return next((name for name in floating if self.dtype(name).itemsize > 1), floating[0] if floating else None)

    def key(self, name: str) -> str:
        return self.where[name][1]

    def shape(self, name: str) -> tuple:
        f, key = self.where[name]
        return f.shape(key)

    def dtype(self, name: str) -> torch.dtype | None:
        f, key = self.where[name]
        return f.dtype(key)

    def tensor(self, name: str) -> torch.Tensor:
        f, key = self.where[name]
        return f.tensor(key)

    def copy_to(self, target: torch.Tensor, name: str) -> None:
        """target.copy_(tensor `name`), converting dtype and device, then free the source's pages."""
        f, key = self.where[name]
        target.copy_(f.tensor(key))
        f.release(key)


def weight_files(root: Path) -> list[Path]:
    """The weight files of a checkpoint directory: the first of WEIGHT_FILES present (an index: its shards)."""
    for name in WEIGHT_FILES:
        path = root / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            weight_map = read_json(path)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:   # read_json's ValueError too
            raise ValueError(f"{path} is not a valid shard index (needs a 'weight_map' object): {e!r}") from None
        if not shards:
            raise ValueError(f"{path} lists no shard files (its 'weight_map' is empty): the index is incomplete; "
                             "restore it from the checkpoint's source, or remove it to load another weight file")
        outside = [s for s in shards if not _inside(s)]
        if outside:
            raise ValueError(f"{path} names shard files outside {root}: {', '.join(map(repr, outside))}; shard "
                             "names must be file names within the checkpoint directory")
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lists shard files that are not in {root}: {', '.join(missing)}")
        return [root / s for s in shards]
    present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise FileNotFoundError(f"no model weights in {root}: looked for {', '.join(WEIGHT_FILES)}; "
                            f"the directory holds: {', '.join(present) or 'nothing'}")


def _index_dtype(root: Path):
    """The "dtype" of the shard index's "metadata", when weight_files reads an index, else None."""
    for name in WEIGHT_FILES:
        if (root / name).is_file():
            if not name.endswith(".index.json"):
                return None
            metadata = read_json(root / name).get("metadata")
            return metadata.get("dtype") if isinstance(metadata, dict) else None
    return None


def _inside(name) -> bool:
    """Whether a shard name from an index stays within its directory: a relative path without '..'."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def check_config_fits(config, ckpt: "Checkpoint") -> None:
    """Refuse a config.json describing a far bigger network than the weights hold, before anything is built
    (a crafted encoder_layers=10**9 would take minutes and the memory of the meta model alone). The estimate
    counts the projections, token embeddings and the sinusoidal position tables the model computes itself (Marian,
    Pegasus, M2M100: none is in the weights; max_position_embeddings=10**12 would ask for terabytes), so it is below
    the true count of any fitting config; the model's own checks name each tensor that differs within that bound."""
    d = config.d_model
    computed_positions = config.family.positions != "learned"
    estimate = (config.vocab_size * d + config.encoder_layers * (4 * d * d + 2 * d * config.encoder_ffn_dim)
                + config.decoder_layers * (8 * d * d + 2 * d * config.decoder_ffn_dim)
                + (2 * config.max_position_embeddings * d if computed_positions else 0))
    held = sum(math.prod(ckpt.shape(n)) for n in ckpt.names())
    if estimate > 2 * held + 1_000_000:
        raise ValueError(
            f"config.json describes a network of at least {estimate:,} parameters (vocab_size={config.vocab_size}, "
            f"d_model={d}, encoder_layers={config.encoder_layers}, decoder_layers={config.decoder_layers}, "
            f"encoder_ffn_dim={config.encoder_ffn_dim}, decoder_ffn_dim={config.decoder_ffn_dim}"
            + (f", max_position_embeddings={config.max_position_embeddings}" if computed_positions else "")
            + f"), but the weights ({ckpt.description}) hold {held:,}: config.json does not belong to these weights; "
            "fix it")


# ---- loading ----------------------------------------------------------------------------------------------------

def dtype_or_legacy(dtype, torch_dtype):
    """from_pretrained's / pipeline's dtype where it may also come by its old name, torch_dtype (transformers 5 takes
    both: dtype when set, else torch_dtype), with transformers' deprecation warning."""
    if torch_dtype is None:
        return dtype
    warn("`torch_dtype` is deprecated! Use `dtype` instead!", FutureWarning)
    return dtype if dtype is not None else torch_dtype


def is_int8(dtype) -> bool:
    """Whether from_pretrained's dtype asks for int8 linear layers: "int8", "torch.int8" or torch.int8."""
    return dtype is torch.int8 or isinstance(dtype, str) and dtype.removeprefix("torch.") == "int8"


def resolve_dtype(dtype, config_dtype: torch.dtype | str | None, ckpt: Checkpoint | None) -> torch.dtype:
    """None -> float32; "auto" -> config.json's dtype (config_dtype), else the checkpoint's (as transformers'
    dtype="auto"; ckpt may be None for any other dtype)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype == "auto":
        found, where = auto_dtype(config_dtype, ckpt)
        if not isinstance(found, str) or found not in DTYPES:
            # float8: transformers 5 fails inside torch (no float8 default dtype); the weights load upcast
            float8 = str(found).startswith("float8")
            fix = ("float8 weights load upcast to the dtype passed: pass dtype='float32' (or 'bfloat16', 'float16')"
                   if float8 else "pass dtype= explicitly")
            raise ValueError(f"dtype='auto' found {found!r} in {where}; supported: {', '.join(DTYPES)}; {fix}")
        return DTYPES[found]
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype.removeprefix("torch."), dtype)
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be None, 'auto' or one of {', '.join(DTYPES)} (str or torch.dtype), "
                         f"or 'int8' (int8 linear layers, CPU); got {dtype!r}")
    return dtype


def auto_dtype(config_dtype, ckpt: Checkpoint) -> tuple[str, str]:
    """(the dtype name dtype="auto" takes, where it was found): config.json's, the shard index's, the weights'."""
    if config_dtype is not None:
        return dtype_name(config_dtype), "config.json 'dtype'"
    if ckpt.index_dtype is not None:
        return ckpt.index_dtype, "the shard index's metadata 'dtype'"
    first = ckpt.first_floating()
    if first is None:
        raise ValueError(f"dtype='auto' found no floating-point weight in {ckpt.description}; pass dtype=")
    return dtype_name(ckpt.dtype(first)), f"the checkpoint ({first})"


def resolve_device(device) -> torch.device:
    """None or -1 (CPU), a CUDA index, "cpu", "cuda", "cuda:N" or a torch.device -> a checked torch.device (this
    machine has it). The integer forms are transformers' pipeline device values."""
    device = named_device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asks for CUDA, but torch.cuda.is_available() is False; "
                             "use 'cpu', or install a CUDA build of torch")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
        return torch.device("cuda", index)
    return device


def named_device(device) -> torch.device:
    """resolve_device's forms -> the torch.device they name, "cpu" or "cuda" (an index kept), without asking this
    machine for it (a Ray replica elsewhere may have the GPU)."""
    if isinstance(device, bool) or not (device is None or isinstance(device, (int, str, torch.device))):
        raise TypeError(f"device must be None, -1, a CUDA index, a string or a torch.device; got {device!r}")
    if isinstance(device, int):
        if device < -1:
            raise ValueError(f"device={device}: use -1 for the CPU or a CUDA index 0, 1, ...")
        device = "cpu" if device == -1 else f"cuda:{device}"
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}, not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return device


@torch.no_grad()
def load(model_cls, config, root: Path, dtype=None, device=None, replace_linear=None) -> nn.Module:
    """model_cls(config) with the weights of checkpoint directory `root`, at dtype (see resolve_dtype) on device
    (see resolve_device), in eval mode. replace_linear: a function given each nn.Linear whose weights come straight
    from the checkpoint, as soon as they are copied, whose result takes its place (int8 quantization: the float32
    weights of those layers then never exist all at once; the others, e.g. a tied LM head, stay nn.Linear)."""
    device = resolve_device(device)
    ckpt = Checkpoint(root)
    check_config_fits(config, ckpt)
    dtype = resolve_dtype(dtype, config.dtype, ckpt)
    with torch.device("meta"):
        model = model_cls(config)
    sources = model.checkpoint_sources(ckpt)
    if replace_linear is not None:
        sources = replace_linears(model, ckpt, sources, replace_linear, dtype, device)
    materialize(model, dtype, device)
    model.tie_weights()
    copy_tensors(model, ckpt, sources)
    model.checkpoint_loaded(ckpt, sources)
    return model.eval()


def replace_linears(model: nn.Module, ckpt: Checkpoint, sources: dict[str, list[str]], replace, dtype, device):
    """Load each nn.Linear whose every tensor is in sources on its own and put replace(linear) in its place;
    returns the sources left to copy."""
    left = dict(sources)
    holders = [(prefix, m) for prefix, m in model.named_modules() if not isinstance(m, nn.Linear)]   # no reference
    for prefix, holder in holders:                                                   # kept to a replaced layer
        for name, child in list(holder.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            full = f"{prefix}.{name}" if prefix else name
            own = {f"{full}.{n}": left.get(f"{full}.{n}") for n, _ in child.named_parameters()}
            if None in own.values():
                continue
            materialize(child, dtype, device)
            copy_tensors(child, ckpt, {n.removeprefix(full + "."): names for n, names in own.items()})
            setattr(holder, name, replace(child))
            for n in own:
                del left[n]
    return left


def materialize(model: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
    """Give the tensors of a model built on the meta device real, uninitialized ones: floating point ones at dtype,
    all on device, one allocation each (tensors already real are kept). (Module.to_empty does the same through
    torch's meta reference kernels, which import sympy and torch.fx: ~70 MB resident and ~1 s on every load.)"""
    for module in model.modules():
        for name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if not t.is_meta:
                continue
            new = torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype, device=device)
            setattr(module, name, nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new)


def copy_tensors(module: nn.Module, ckpt: Checkpoint, sources: dict[str, list[str]]) -> None:
    """For each of the module's tensors by name: the checkpoint tensors `sources[name]`, stacked on dim 0."""
    targets = dict(module.named_parameters()) | dict(module.named_buffers())
    for name, names in sources.items():
        target = targets[name]
        rows = target.shape[0] // len(names)
        for i, n in enumerate(names):
            ckpt.copy_to(target[i * rows:(i + 1) * rows], n)


def save(model: nn.Module, directory: str | Path) -> Path:
    """Write config.json and model.safetensors (model.checkpoint_config(), model.checkpoint_tensors())."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", model.checkpoint_config(), indent=2, sort_keys=True)
    with writing(directory / "model.safetensors"):
        save_file(model.checkpoint_tensors(), directory / "model.safetensors", metadata={"format": "pt"})
    return directory
