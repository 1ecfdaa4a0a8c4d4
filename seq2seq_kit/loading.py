"""Checkpoint I/O between transformers' on-disk layouts and seq2seq_kit's BartForConditionalGeneration.

Reads model.safetensors, a sharded model.safetensors.index.json, pytorch_model.bin or a sharded
pytorch_model.bin.index.json (safetensors preferred), with or without the "model." key prefix, with or without
lm_head.weight / final_logits_bias / encoder.embed_tokens / decoder.embed_tokens. The model is built on the meta
device, allocated once at its final dtype and device, and every tensor is copied straight into place from the
memory-mapped file, so no second full copy of the weights is made.

Key map (checkpoint name without "model." -> ours): identical, except the fused projections
  {encoder,decoder}.layers.N.self_attn.{q,k,v}_proj.*  ->  ...self_attn.qkv_proj.*   (stacked on dim 0)
  decoder.layers.N.encoder_attn.{k,v}_proj.*           ->  ...encoder_attn.kv_proj.* (stacked on dim 0)
"""

from __future__ import annotations

import json
import mmap
import re
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import hub
from .hub import WEIGHT_FILES
from .config import BartConfig
from .generation.config import GenerationConfig

TOP_LEVEL = ("lm_head.weight", "final_logits_bias")                  # the only names without "model."
IGNORED = re.compile(r"(^|\.)(encoder|decoder)\.version$")           # fairseq leftovers transformers ignores too
SHARED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES, "int8")   # what from_pretrained(dtype=...) takes by name (int8: CPU only)
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def checkpoint_names(name: str) -> list[str]:
    """Our parameter name -> the checkpoint names (without "model.") whose tensors, stacked on dim 0, make it."""
    for fused, parts in ((".qkv_proj.", "qkv"), (".kv_proj.", "kv")):
        if fused in name:
            head, leaf = name.split(fused)
            return [f"{head}.{p}_proj.{leaf}" for p in parts]
    return [name]


def published(base: str) -> str:
    """A checkpoint name without "model." -> its name in a transformers BartForConditionalGeneration file."""
    return base if base in TOP_LEVEL else "model." + base


# ---- reading checkpoint files -----------------------------------------------------------------------------------

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
            raise ValueError(f"{self.path}: {key!r} has dtype {entry['dtype']}; expected a float dtype")
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
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise ValueError(f"{path} does not hold a state dict of tensors")
        self.state = state

    def keys(self):
        return self.state.keys()

    def shape(self, key: str) -> tuple:
        return tuple(self.state[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self.state[key].dtype

    def tensor(self, key: str) -> torch.Tensor:
        return self.state[key]

    def release(self, key: str) -> None:
        pass


class Checkpoint:
    """The tensors of a checkpoint directory, by name without the "model." prefix, across shards."""

    def __init__(self, root: Path):
        self.files = weight_files(root)
        self.where: dict[str, tuple] = {}       # name -> (file, key as stored)
        for path in self.files:
            f = (_SafetensorsFile if path.suffix == ".safetensors" else _TorchFile)(path)
            for key in f.keys():
                name = key.removeprefix("model.")
                if name in self.where:
                    raise ValueError(f"{path}: weight {key!r} appears twice in the checkpoint "
                                     f"(also in {self.where[name][0].path})")
                self.where[name] = (f, key)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def names(self) -> set[str]:
        return set(self.where)

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
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a valid shard index (needs a 'weight_map' object): {e!r}") from None
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lists shard files that are not in {root}: {', '.join(missing)}")
        return [root / s for s in shards]
    present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise FileNotFoundError(f"no model weights in {root}: looked for {', '.join(WEIGHT_FILES)}; "
                            f"the directory holds: {', '.join(present) or 'nothing'}")


# ---- loading ----------------------------------------------------------------------------------------------------

def resolve_dtype(dtype, config: BartConfig, ckpt: Checkpoint) -> torch.dtype:
    """None -> float32; "auto" -> config.json's dtype, else the checkpoint's (as transformers' dtype="auto")."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype == "auto":
        if config.dtype is not None:
            found, where = config.dtype, "config.json 'dtype'"
        else:
            first = next(n for n in sorted(ckpt.names()) if ckpt.dtype(n) is not None and ckpt.dtype(n).is_floating_point)
            found, where = str(ckpt.dtype(first)).removeprefix("torch."), f"the checkpoint ({first})"
        if found not in DTYPES:
            raise ValueError(f"dtype='auto' found {found!r} in {where}; supported: {', '.join(DTYPES)}; "
                             "pass dtype= explicitly")
        return DTYPES[found]
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype.removeprefix("torch."), dtype)
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be None, 'auto' or one of {', '.join(DTYPES)} (str or torch.dtype), "
                         f"or 'int8' (int8 linear layers, CPU); got {dtype!r}")
    return dtype


def resolve_device(device) -> torch.device:
    """None or -1 (CPU), a CUDA index, "cpu", "cuda", "cuda:N" or a torch.device -> a checked torch.device.
    The integer forms are transformers' pipeline device values."""
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
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asks for CUDA, but torch.cuda.is_available() is False; "
                             "use 'cpu', or install a CUDA build of torch")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return device


def plan(model: nn.Module, ckpt: Checkpoint) -> dict[str, list[str]]:
    """Our tensor name -> the checkpoint names stacked to make it. Raises one error listing every missing and
    unexpected weight, then one listing every shape mismatch."""
    tied = model.config.tie_word_embeddings
    ours = dict(model.named_parameters()) | dict(model.named_buffers())   # a tied lm_head is not listed
    sources, missing = {}, []
    for name in ours:
        if name == "shared.weight":   # transformers ties symmetrically: any present copy of the embedding works
            aliases = SHARED_ALIASES + (("lm_head.weight",) if tied else ())
            found = [a for a in aliases if a in ckpt]
            names = found[:1] or ["shared.weight"]
        else:
            names = checkpoint_names(name)
        if name == "final_logits_bias" and name not in ckpt:
            continue                  # absent from many checkpoints: zeros, as transformers
        missing += [n for n in names if n not in ckpt]
        sources[name] = names
    used = {n for names in sources.values() for n in names}
    optional = set(SHARED_ALIASES) | ({"lm_head.weight"} if tied else set())   # compared with shared, below
    unexpected = sorted(ckpt.key(n) for n in ckpt.names() - used - optional if not IGNORED.search(n))
    if missing or unexpected:
        lines = [f"the checkpoint's weights ({', '.join(p.name for p in ckpt.files)}) do not fit the "
                 f"{model.config.model_type!r} model config.json describes:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(sorted(published(n) for n in missing))}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected)}")
        raise ValueError("\n".join(lines))
    bad = []
    for name, names in sources.items():
        expected = ours[name].shape
        part = (expected[0] // len(names), *expected[1:])
        for n in names:
            if ckpt.shape(n) != part:
                bad.append(f"  {ckpt.key(n)}: config.json implies {list(part)}, the checkpoint has {list(ckpt.shape(n))}")
    for n in optional & ckpt.names():
        if ckpt.shape(n) != tuple(model.shared.weight.shape):
            bad.append(f"  {ckpt.key(n)}: config.json implies {list(model.shared.weight.shape)}, "
                       f"the checkpoint has {list(ckpt.shape(n))}")
    if bad:
        raise ValueError("config.json's sizes do not match the checkpoint's weights:\n" + "\n".join(bad))
    return sources


@torch.no_grad()
def from_pretrained(cls, path, dtype=None, device=None, **hub_kwargs):
    root = hub.resolve(path, purpose="model", **hub_kwargs)
    config = BartConfig.from_pretrained(root)
    if "quantization_config" in config.extra:
        raise ValueError(f"{root} holds a quantized checkpoint (config.json has quantization_config); "
                         "seq2seq_kit loads float32/float16/bfloat16 weights only")
    device = resolve_device(device)
    ckpt = Checkpoint(root)
    dtype = resolve_dtype(dtype, config, ckpt)

    with torch.device("meta"):
        model = cls(config)
    sources = plan(model, ckpt)
    model.to(dtype).to_empty(device=device)       # one allocation, final dtype and device, not initialized
    model.tie_weights()
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, names in sources.items():
        target = params[name]
        rows = target.shape[0] // len(names)
        for i, n in enumerate(names):
            ckpt.copy_to(target[i * rows:(i + 1) * rows], n)
    if "final_logits_bias" not in sources:
        model.final_logits_bias.zero_()
    _check_copies(model, ckpt, sources)
    model.eval()
    model.generation_config = GenerationConfig.from_pretrained(root, config)
    return model


def _check_copies(model: nn.Module, ckpt: Checkpoint, sources: dict) -> None:
    """Extra copies of the token embedding must equal it: encoder/decoder.embed_tokens (else: unsupported), and a
    saved lm_head (else it is kept separate, as transformers does, with the same warning)."""
    shared = model.shared.weight
    for n in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if n in ckpt and n not in sources["shared.weight"] and not torch.equal(ckpt.tensor(n).to(shared), shared):
            raise ValueError(f"{ckpt.key(n)} differs from the shared token embedding; separate encoder/decoder "
                             "embeddings are not supported")
    n = "lm_head.weight"
    if model.config.tie_word_embeddings and n in ckpt and n not in sources["shared.weight"]:
        head = ckpt.tensor(n).to(shared, copy=True)   # a copy: not a view of the file
        if not torch.equal(head, shared):
            warnings.warn("the checkpoint's lm_head.weight differs from its token embedding although "
                          "tie_word_embeddings is true; using it untied, as transformers does", stacklevel=3)
            model.lm_head.weight = nn.Parameter(head)


# ---- saving -----------------------------------------------------------------------------------------------------

def transformers_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our tensors under transformers' names (fused projections split), on the CPU; a tied lm_head is left out."""
    out = {}
    for name, tensor in (dict(model.named_parameters()) | dict(model.named_buffers())).items():
        names = checkpoint_names(name)
        for n, part in zip(names, tensor.detach().chunk(len(names), dim=0)):
            out[published(n)] = part.to("cpu").contiguous()
    return out


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    config.setdefault("architectures", ["MBartForConditionalGeneration" if model.config.model_type == "mbart"
                                        else "BartForConditionalGeneration"])
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(transformers_state_dict(model), directory / "model.safetensors", metadata={"format": "pt"})
    if model.generation_config is not None:
        model.generation_config.save_pretrained(directory)
    return directory
