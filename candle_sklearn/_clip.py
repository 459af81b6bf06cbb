"""open_clip models: resolve ``pretrained``, fail fast offline, keep one loaded copy per
(model, weights, device, precision) for the whole process, encode text."""

import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

BUNDLED_DIR = Path(__file__).parent / "weights"
PRECISIONS = ("fp32", "fp16", "bf16", "amp")
_LOCAL_DIR = "local-dir:"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be found locally or fetched."""


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    device: torch.device
    precision: str
    embed_dim: int

    def autocast(self):
        """Mixed precision for ``precision="amp"``; a no-op otherwise."""
        if self.precision != "amp":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def input_dtype(self):
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision,
                                                                  torch.float32)


_CACHE: dict = {}
_LOCK = threading.Lock()


def bundled_models():
    """Names of the models whose weights ship with the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "open_clip_config.json").is_file())


def _hub_offline():
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _reachable(host, port=443, timeout=3.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_cache_only():
    """Make huggingface_hub look in its local cache only (no network, no retries)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip depends on it
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _unavailable(model_name, tag, why):
    return WeightsUnavailableError(
        f"pretrained weights {tag!r} for model {model_name!r} are not in the local cache "
        f"and could not be fetched ({why}). Download them where there is network access, "
        f"then pass the file: ClipEmbedder(model_name={model_name!r}, "
        "pretrained='/path/to/open_clip_pytorch_model.bin'), or an open_clip folder with "
        "pretrained='local-dir:/path/to/folder'; pretrained=None gives random weights.")


def _cached_checkpoint(cfg):
    """The checkpoint of a pretrained config if it is already on disk, without any
    network access; else None."""
    from open_clip.pretrained import download_pretrained

    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if not cfg.get("hf_hub"):  # a plain URL: open_clip keeps it in ~/.cache/clip
        target = os.path.expanduser(os.path.join("~/.cache/clip",
                                                 os.path.basename(cfg.get("url", ""))))
        return target if cfg.get("url") and os.path.isfile(target) else None
    try:
        with _hub_cache_only():
            path = download_pretrained(cfg)
    except Exception:  # noqa: BLE001 - not in the hub cache
        return None
    return path if path and os.path.isfile(path) else None


def _download_tag(model_name, tag):
    """Local path of the checkpoint for a known tag: from the cache, else downloaded
    if the host answers within seconds, else a clear error."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"pretrained={tag!r} is neither a file, a 'local-dir:' folder, "
                         f"'bundled', nor a known tag of {model_name!r} (known tags: {tags})")
    if path := _cached_checkpoint(cfg):
        return path
    if _hub_offline():
        raise _unavailable(model_name, tag, "HF_HUB_OFFLINE is set")
    host = "huggingface.co" if cfg.get("hf_hub") else urlparse(cfg.get("url", "")).hostname
    if not host or not _reachable(host):
        raise _unavailable(model_name, tag, f"{host or 'its host'} is unreachable")
    try:
        return download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001 - network errors of many kinds
        raise _unavailable(model_name, tag, f"{type(exc).__name__}: {exc}") from exc


def resolve(model_name, pretrained):
    """``(open_clip model name, pretrained argument)`` for open_clip's factory.

    ``pretrained`` may be None (random weights), ``"bundled"`` (weights shipped with
    this package), a checkpoint file, ``"local-dir:/folder"`` (open_clip layout: config
    and weights), or a tag such as ``"openai"`` (local cache, else download).
    """
    if pretrained is None:
        if model_name in bundled_models():  # the bundled architecture, random weights
            return _LOCAL_DIR + str(BUNDLED_DIR / model_name), None
        return model_name, None
    pretrained = str(pretrained)
    if pretrained == "bundled":
        if model_name not in bundled_models():
            raise ValueError(f"no bundled weights for model {model_name!r}; "
                             f"bundled models: {bundled_models()}")
        return _LOCAL_DIR + str(BUNDLED_DIR / model_name), None
    if pretrained.startswith(_LOCAL_DIR):
        folder = Path(pretrained[len(_LOCAL_DIR):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{pretrained!r}: no open_clip_config.json in {folder}")
        return _LOCAL_DIR + str(folder.resolve()), None
    if os.path.isfile(os.path.expanduser(pretrained)):
        return model_name, os.path.abspath(os.path.expanduser(pretrained))
    if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
        raise FileNotFoundError(f"pretrained checkpoint file not found: {pretrained!r}")
    return model_name, _download_tag(model_name, pretrained)


def _open_clip_precision(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
    return "fp32" if precision == "amp" else precision


def load(model_name, pretrained, device, precision="fp32"):
    """The process-wide loaded model for (model, weights, device, precision)."""
    key = (model_name, None if pretrained is None else str(pretrained), str(device), precision)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(model_name, pretrained, device, precision)
        return _CACHE[key]


def _load(model_name, pretrained, device, precision):
    import open_clip

    name, weights = resolve(model_name, pretrained)
    if not name.startswith(_LOCAL_DIR) and name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; see open_clip.list_models() "
                         "or register a config with open_clip.add_model_config")
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=weights, device=device, load_weights=pretrained is not None,
        precision=_open_clip_precision(precision, device))
    model.eval().requires_grad_(False)
    embed_dim = int(open_clip.get_model_config(name)["embed_dim"])
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(name), device, precision,
                       embed_dim)


def clear_cache():
    """Forget every loaded model (frees their memory once no estimator uses them)."""
    with _LOCK:
        _CACHE.clear()


@torch.inference_mode()
def encode_text(loaded, texts, batch_size=256):
    """Text embeddings (n, embed_dim) as float32 CPU tensor (not normalised)."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = loaded.tokenizer(list(texts[start:start + batch_size])).to(loaded.device)
        with loaded.autocast():
            out.append(loaded.model.encode_text(tokens).float().cpu())
    return torch.cat(out) if out else torch.empty(0, loaded.embed_dim)
