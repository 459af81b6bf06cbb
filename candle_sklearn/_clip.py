"""open_clip models: resolve ``pretrained`` to a checkpoint and a content fingerprint,
fail fast offline, keep one loaded copy per (weights, device, precision) for the whole
process, encode text. Checkpoint problems become one-line errors that name the file."""

import contextlib
import json
import logging
import os
import pickle
import socket
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from . import _fingerprint
from .exceptions import CheckpointError, WeightsUnavailableError

BUNDLED_DIR = Path(__file__).parent / "weights"
PRECISIONS = ("fp32", "fp16", "bf16", "amp")
_LOCAL_DIR = "local-dir:"
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
# What a pretrained tag says about preprocessing; open_clip only applies it when it
# loads the tag itself, and we hand it a file.
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")

__all__ = ["WeightsUnavailableError", "LoadedModel", "WeightsSpec", "resolve", "load",
           "clear_cache", "encode_text", "bundled_models"]


@dataclass(frozen=True)
class WeightsSpec:
    """What ``(model_name, pretrained)`` resolves to, before anything is loaded."""

    model_name: str  # as the user wrote it
    name: str  # open_clip model name, or "local-dir:/absolute/folder"
    checkpoint: str | None  # the file open_clip loads; None: random weights
    config: dict = field(repr=False)  # open_clip model config
    options: dict = field(default_factory=dict)  # open_clip create_model overrides
    weights_sha256: str | None = None  # content hash of ``checkpoint``
    fingerprint: str | None = None  # weights + config + options; None: random

    @property
    def embed_dim(self):
        return int(self.config["embed_dim"])

    @property
    def from_local_dir(self):
        """Whether a ``local-dir:`` folder holds the weights and their config (which a
        process elsewhere then finds there, not in its open_clip registry)."""
        return self.name.startswith(_LOCAL_DIR)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded open_clip model with its preprocess and tokenizer."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    device: torch.device
    precision: str
    embed_dim: int
    fingerprint: str  # of the weights; "random:<uuid>" for random weights
    spec: WeightsSpec = field(repr=False)

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


_CACHE: dict = {}  # (name, checkpoint, options, device, precision) -> LoadedModel
_TAG_PATHS: dict = {}  # (model_name, tag) -> checkpoint file found for it
_LOCK = threading.Lock()


def bundled_models():
    """Names of the models whose weights ship with the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "open_clip_config.json").is_file())


# ------------------------------------------------------- finding the weights
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


def _tag_options(model_name, tag):
    """open_clip overrides that a tag implies: its preprocessing, and QuickGELU for
    weights trained with it (the OpenAI ones), which a plain model name lacks."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    options = {f"image_{k}": cfg[k] for k in _PREPROCESS_KEYS if k in cfg}
    if cfg.get("quick_gelu"):
        options["force_quick_gelu"] = True
    return options


def _find_checkpoint_in_dir(folder):
    """The weights file open_clip picks in a ``local-dir:`` folder, or None."""
    try:
        from open_clip.factory import _find_checkpoint_in_dir as find
    except ImportError:  # pragma: no cover - older open_clip: same preference order
        def find(path):
            files = sorted(p for p in path.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES)
            return str(files[0]) if files else None
    return find(folder)


def _named_config(model_name):
    import open_clip

    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; see open_clip.list_models() "
                         "or register a config with open_clip.add_model_config")
    return open_clip.get_model_config(model_name)


def _local_dir(folder, pretrained):
    folder = Path(folder).expanduser()
    config_file = folder / "open_clip_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{pretrained!r}: no open_clip_config.json in {folder}")
    try:
        config = json.loads(config_file.read_text())["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{config_file} is not an open_clip config (a JSON object with "
                         f"'model_cfg'): {type(exc).__name__}: {exc}") from None
    return folder.resolve(), config_file, config


def resolve(model_name, pretrained):
    """The :class:`WeightsSpec` of ``(model_name, pretrained)``, without loading.

    ``pretrained`` may be None (random weights), ``"bundled"`` (weights shipped with
    this package), a checkpoint file, ``"local-dir:/folder"`` (open_clip layout: config
    and weights; the folder's path alone too), or a tag such as ``"openai"`` (local
    cache, else download). A bundled model's architecture and preprocessing are its
    folder's, whatever weights it is given.
    """
    if pretrained is None:
        if model_name in bundled_models():  # the bundled architecture, random weights
            folder, _, config = _local_dir(BUNDLED_DIR / model_name, "bundled")
            return WeightsSpec(model_name, _LOCAL_DIR + str(folder), None, config)
        return WeightsSpec(model_name, model_name, None, _named_config(model_name))
    pretrained = os.fspath(pretrained)
    if pretrained == "bundled":
        if model_name not in bundled_models():
            raise ValueError(f"no bundled weights for model {model_name!r}; "
                             f"bundled models: {bundled_models()}")
        pretrained = _LOCAL_DIR + str(BUNDLED_DIR / model_name)
    elif os.path.isfile(os.path.join(os.path.expanduser(pretrained), "open_clip_config.json")):
        pretrained = _LOCAL_DIR + pretrained  # an open_clip folder: config and weights
    if pretrained.startswith(_LOCAL_DIR):
        folder, config_file, config = _local_dir(pretrained[len(_LOCAL_DIR):], pretrained)
        checkpoint = _find_checkpoint_in_dir(folder)
        if checkpoint is None:
            raise WeightsUnavailableError(
                f"{pretrained!r}: the folder {folder} has an open_clip_config.json but no "
                f"weights file ({', '.join('*' + s for s in _CHECKPOINT_SUFFIXES[:3])}); "
                "put the checkpoint there (e.g. open_clip_model.safetensors)")
        return _with_fingerprint(WeightsSpec(
            model_name, _LOCAL_DIR + str(folder), checkpoint, config),
            config_file=_fingerprint.file_sha256(config_file))
    name, config, extra = _architecture(model_name)
    if os.path.isfile(os.path.expanduser(pretrained)):
        checkpoint = os.path.abspath(os.path.expanduser(pretrained))
        return _with_fingerprint(WeightsSpec(model_name, name, checkpoint, config), **extra)
    if os.path.isdir(os.path.expanduser(pretrained)):
        raise FileNotFoundError(f"pretrained={pretrained!r} is a folder, not a checkpoint "
                                f"file; for an open_clip model folder (its config and "
                                f"weights) pass pretrained='{_LOCAL_DIR}{pretrained}'")
    if os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"pretrained checkpoint file not found: {pretrained!r}")
    checkpoint = _TAG_PATHS.get((model_name, pretrained))
    if checkpoint is None or not os.path.isfile(checkpoint):
        checkpoint = _TAG_PATHS[model_name, pretrained] = _download_tag(model_name, pretrained)
    return _with_fingerprint(WeightsSpec(model_name, model_name, checkpoint, config,
                                         _tag_options(model_name, pretrained)))


def absolute_pretrained(pretrained):
    """``pretrained`` naming the same weights from any working directory: a relative
    checkpoint file or open_clip folder (``local-dir:`` or its bare path, as
    :func:`resolve` reads them) made absolute; tags, ``"bundled"`` and None as they are."""
    if pretrained is None:
        return None
    text = os.fspath(pretrained)
    if text.startswith(_LOCAL_DIR):
        return _LOCAL_DIR + os.path.abspath(os.path.expanduser(text[len(_LOCAL_DIR):]))
    path = os.path.expanduser(text)
    if text != "bundled" and (os.path.isfile(path) or
                              os.path.isfile(os.path.join(path, "open_clip_config.json"))):
        return os.path.abspath(path)
    return pretrained


def _architecture(model_name):
    """``(name, config, fingerprint parts)`` of a model name: a bundled model's folder
    (its config and preprocessing, whatever weights it is given), else open_clip's."""
    if model_name in bundled_models():
        folder, config_file, config = _local_dir(BUNDLED_DIR / model_name, "bundled")
        return (_LOCAL_DIR + str(folder), config,
                {"config_file": _fingerprint.file_sha256(config_file)})
    return model_name, _named_config(model_name), {}


def _with_fingerprint(spec, **extra):
    """``spec`` with the content hash of its checkpoint and its fingerprint."""
    try:
        size = os.path.getsize(spec.checkpoint)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {spec.checkpoint} cannot be read: "
                              f"{exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {spec.checkpoint} is empty (0 bytes): an "
                              "interrupted download or copy? Fetch it again")
    digest = _fingerprint.file_sha256(spec.checkpoint)
    if spec.name.startswith(_LOCAL_DIR):  # the folder's config file holds the rest
        fingerprint = _fingerprint.combine(weights=digest, **extra)
    else:
        config, preprocess = _effective(spec)
        fingerprint = _fingerprint.combine(weights=digest, config=config,
                                           preprocess=preprocess)
    return WeightsSpec(spec.model_name, spec.name, spec.checkpoint, spec.config,
                       spec.options, digest, fingerprint)


def _effective(spec):
    """The model config and preprocessing that loading will use, so that equal models
    get equal fingerprints however they are named: "ViT-B-16" with the "openai" tag
    and "ViT-B-16-quickgelu" with the same file are one model."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg

    config = dict(spec.config)
    if spec.options.get("force_quick_gelu"):
        config["quick_gelu"] = True
    preprocess = asdict(PreprocessCfg())
    preprocess.update({k[len("image_"):]: v for k, v in spec.options.items()
                       if k.startswith("image_")})
    preprocess.pop("size", None)  # follows the config's image size
    return config, preprocess


# ------------------------------------------------------------------ loading
def _open_clip_precision(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
    return "fp32" if precision == "amp" else precision


def load(model_name, pretrained, device, precision="fp32", spec=None):
    """The process-wide loaded model for (weights, device, precision). A checkpoint
    rewritten in place gets a new fingerprint, hence a fresh load."""
    spec = spec or resolve(model_name, pretrained)
    device = torch.device(device)
    key = (spec.name, spec.checkpoint, json.dumps(spec.options, sort_keys=True),
           str(device), precision)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is None or (spec.fingerprint is not None
                              and cached.fingerprint != spec.fingerprint):
            _CACHE[key] = cached = _load(spec, device, precision)
        return cached


def _load(spec, device, precision):
    import open_clip

    local = spec.name.startswith(_LOCAL_DIR)
    # open_clip loads a folder's own weights itself; other weights for the folder's
    # architecture (a checkpoint file for a bundled model) go into the model it builds
    foreign = local and spec.checkpoint is not None and spec.checkpoint != \
        _find_checkpoint_in_dir(Path(spec.name[len(_LOCAL_DIR):]))
    try:
        with _quiet_random_init(foreign):
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=None if local else spec.checkpoint,
                load_weights=spec.checkpoint is not None and not foreign, device=device,
                precision=_open_clip_precision(precision, device), **spec.options)
            if foreign:
                open_clip.load_checkpoint(model, spec.checkpoint)
    except Exception as exc:
        if spec.checkpoint is None or not _raised_reading_checkpoint(exc):
            raise
        raise CheckpointError(_checkpoint_problem(spec, exc)) from None
    model.eval().requires_grad_(False)
    fingerprint = spec.fingerprint or f"random:{uuid.uuid4().hex}"
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(spec.name), device,
                       precision, spec.embed_dim, fingerprint, spec)


class _NoRandomInitNote(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_random_init(quiet):
    """Silence open_clip's "initialized randomly" note for a model whose weights are
    loaded right after it is built."""
    if not quiet:
        yield
        return
    note = _NoRandomInitNote()
    logging.getLogger().addFilter(note)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(note)


def _open_clip_frames(exc):
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(exc.__traceback__)
            if "open_clip" in frame.f_code.co_filename]


def _raised_reading_checkpoint(exc):
    return "load_checkpoint" in _open_clip_frames(exc)


def _one_line(text, limit=200):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _checkpoint_problem(spec, exc):
    """One line: the file and what is wrong with it."""
    path, kind = spec.checkpoint, type(exc).__name__
    if kind == "SafetensorError":
        return f"checkpoint {path} is not a valid safetensors file ({_one_line(exc)})"
    if isinstance(exc, pickle.UnpicklingError) and "Weights only" in str(exc):
        return (f"checkpoint {path} holds Python objects besides tensors; candle_sklearn "
                "never runs code from a checkpoint (torch.load(weights_only=True)). Re-save "
                "its state dict with torch.save(model.state_dict(), path) or as safetensors")
    if "load_state_dict" in _open_clip_frames(exc):  # reading the file failed
        return (f"checkpoint {path} is not a readable PyTorch checkpoint (corrupt or "
                f"truncated? {kind}: {_one_line(exc, 80)})")
    return (f"checkpoint {path} does not fit the architecture of model "
            f"{spec.model_name!r}: {kind}: {_one_line(_first_problem(exc))}; check "
            "model_name against the model the checkpoint was trained as")


def _first_problem(exc):
    """The first specific line of a load_state_dict report (it lists every key)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["no message"]
    return lines[1] if len(lines) > 1 else lines[0]


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
