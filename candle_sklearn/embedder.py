"""ClipEmbedder: open_clip image features behind a scikit-learn transformer."""

import contextlib
import os
from numbers import Integral

import numpy as np
import torch
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                          _fit_context)
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from . import _clip, _gpu_images
from ._cache import MEMORY, caches_for
from ._devices import resolve_device
from ._images import DECODING_VERSION, BatchPreprocess, as_items, item_key, iter_batches
from ._params import store_init_arguments
from ._threads import torch_threads, working_n_jobs

# Finished embeddings go to the caches at least this often, so that an error, an
# interrupt or a crash late in a long run loses at most this many encodings.
_FLUSH_EVERY = 1024


class ClipEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """CLIP image features from an open_clip model.

    Nothing is learned: ``transform`` works without ``fit`` (``fit`` only checks the
    input and loads the model early). The model is loaded at first use (never in
    ``__init__``) into a process-wide cache keyed by the weights' content fingerprint,
    device and precision: every clone of the estimator, and a
    :class:`~candle_sklearn.CandleClassifier` that uses it as ``encoder``, share one
    copy. Embeddings are cached too, so that no image is encoded twice in a process
    (and, with ``cache=<directory>``, across processes). Pickling never stores weights.

    Parameters
    ----------
    model_name : str, default="ViT-B-16"
        An open_clip model name (``open_clip.list_models()``).
    pretrained : str or None, default="openai"
        Weights: an open_clip tag (looked up in the local cache, downloaded when the
        network answers, else a clear error within seconds), a checkpoint file,
        ``"local-dir:/folder"`` (open_clip config and weights), ``"bundled"`` (weights
        shipped with this package), or None for random weights. A tag also brings its
        preprocessing and, for the OpenAI weights, QuickGELU activations (for those
        weights from a file, use the ``-quickgelu`` model name).
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"mps"``.
    precision : {"fp32", "fp16", "bf16", "amp"}, default="fp32"
        Model precision; ``"amp"`` runs fp32 weights under autocast (fp16 on CUDA,
        bf16 on CPU); ``"fp16"`` needs CUDA. Outputs are float32 in every case.
    batch_size : int, default=64
        Images per forward pass.
    num_workers : int, default=2
        Threads that decode and preprocess images while the model runs (0: decode in
        the calling thread). Threads work everywhere processes do not: inside joblib
        workers, in scripts without a ``__main__`` guard, with images in memory.
    n_jobs : int or None, default=None
        Torch threads for the model while this estimator computes. None: torch's
        setting (one thread per core, fewer inside joblib workers), but no more than the
        cores that other processes leave free (by the load average); -1: every core.
    decode : {"auto", "pil"}, default="auto"
        How image files are decoded when the model runs on CUDA. ``"auto"``: JPEG files
        on the GPU (nvJPEG through torchvision, then resized, cropped and normalised
        there, a batch ahead of the model; the threads only read the files), everything
        else with PIL: other formats, images in memory, and the JPEG files this path
        does not take (CMYK, progressive, turned by their EXIF, truncated, refused by
        nvJPEG, ...). ``"pil"``: every image with PIL, as on the CPU. The GPU's pixels
        differ from PIL's by rounding (see ``candle_sklearn._gpu_images`` for the
        measured tolerance), so the embedding caches keep the two apart. Elsewhere than
        CUDA (or without nvJPEG), both are PIL.
    normalize : bool, default=True
        L2-normalise the embeddings (as CLIP's zero-shot classifier does).
    cache : bool or str, default=True
        True: keep embeddings in a process-wide memory cache (and, in the worker
        processes of a parallel search, in a temporary disk cache that the workers
        share with their parent and that is removed when it exits); a directory: also
        in an SQLite file there that any process can reuse; False: no cache. Keys are
        the weights' fingerprint and precision, plus each image's path, modification
        and change times, size and inode (files) or content hash (images in memory).
        The memory cache keeps the most recently used embeddings, up to the
        ``CANDLE_SKLEARN_MEMORY_CACHE_MB`` environment variable (default 4096 MiB). Random weights
        (``pretrained=None``) are cached in memory only.
    verbose : int, default=0
        Progress bar over images being encoded.

    Attributes
    ----------
    embed_dim_ : int
        Dimension of the embeddings (number of output features).

    See Also
    --------
    load_model : the loaded open_clip model, preprocess and tokenizer.

    Examples
    --------
    >>> from candle_sklearn import ClipEmbedder
    >>> emb = ClipEmbedder("ViT-B-32", pretrained=None, device="cpu")  # random weights
    >>> import numpy as np
    >>> emb.transform([np.zeros((64, 64, 3), dtype=np.uint8)]).shape
    (1, 512)
    """

    _parameter_constraints: dict = {
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "device": [str],
        "precision": [StrOptions(set(_clip.PRECISIONS))],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "n_jobs": [Interval(Integral, 1, None, closed="left"),
                   Interval(Integral, None, -1, closed="right"), None],
        "decode": [StrOptions({"auto", "pil"})],
        "normalize": ["boolean"],
        "cache": ["boolean", str, os.PathLike],
        "verbose": ["verbose"],
    }

    def __init__(self, model_name="ViT-B-16", pretrained="openai", *, device="auto",
                 precision="fp32", batch_size=64, num_workers=2, n_jobs=None, decode="auto",
                 normalize=True, cache=True, verbose=0):
        store_init_arguments(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # stateless: nothing is learned from the data
        tags.input_tags.two_d_array = False  # a list of images, not a feature matrix
        tags.input_tags.string = True  # file paths
        tags.transformer_tags.preserves_dtype = []  # always float32
        # cuDNN convolutions and reduced precision are not bitwise reproducible
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags

    def __setstate__(self, state):
        # pickled before `decode` existed: it decoded with PIL, and goes on doing so
        state.setdefault("decode", "pil")
        super().__setstate__(state)

    # -------------------------------------------------------------- model
    def resolve_weights(self):
        """Find the weights this embedder would load, without loading them.

        Returns
        -------
        spec : object
            With ``checkpoint`` (the file, or None for random weights), ``fingerprint``
            (of the weights, config and options; None for random weights), ``config``
            (the open_clip model config) and ``from_local_dir``. Raises as
            :meth:`load_model` would where the weights cannot be found.
        """
        self._validate_params()
        return self._spec()

    def _spec(self):
        return _clip.resolve(self.model_name, self.pretrained)

    def _loaded(self, spec=None):
        return _clip.load(self.model_name, self.pretrained, resolve_device(self.device),
                          self.precision, spec=spec)

    def load_model(self):
        """The open_clip model this estimator uses, loaded if it is not yet.

        The object is shared by every estimator with the same weights, device and
        precision in the process; do not modify the model in place.

        Returns
        -------
        loaded : object
            With attributes ``model`` (the open_clip ``torch.nn.Module``, in eval
            mode), ``preprocess`` (PIL image to tensor), ``tokenizer`` (list of str to
            token tensor), ``device``, ``precision``, ``embed_dim`` and ``fingerprint``
            (SHA-256 over the weights, config and preprocessing; ``"random:..."`` for
            random weights).

        Examples
        --------
        >>> from candle_sklearn import ClipEmbedder
        >>> clip = ClipEmbedder("candle-tiny", "bundled", device="cpu").load_model()
        >>> clip.model.encode_text(clip.tokenizer(["a photo of a cat."])).shape
        torch.Size([1, 64])
        """
        return self._loaded()

    @property
    def _n_features_out(self):
        if hasattr(self, "embed_dim_"):
            return self.embed_dim_
        return self._spec().embed_dim  # read from the config; nothing is loaded

    # ---------------------------------------------------------- sklearn API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the input and load the model (nothing is learned).

        Parameters
        ----------
        X : list of images
            Paths (str, bytes or ``pathlib.Path``), PIL images, arrays (H, W, 3) or (H, W)
            (uint8; uint16 as 16-bit; float in [0, 1]), a 4-D array (n, H, W, 3), or a
            one-column DataFrame of these.
        y : ignored

        Returns
        -------
        self : ClipEmbedder
        """
        as_items(X)
        self.embed_dim_ = self._loaded().embed_dim
        return self

    def transform(self, X):
        """Embed images (no ``fit`` needed).

        Parameters
        ----------
        X : list of images
            See :meth:`fit`.

        Returns
        -------
        features : ndarray of shape (n_images, embed_dim_), float32
        """
        self._validate_params()
        items = as_items(X)
        with torch_threads(working_n_jobs(self.n_jobs)):
            return self._embed(items)

    def fit_transform(self, X, y=None):
        """Fit, then embed ``X`` (validated and loaded once)."""
        return self.fit(X).transform(X)

    def encode_text(self, texts):
        """Embed texts with the same model (L2-normalised when ``normalize``).

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        features : ndarray of shape (len(texts), embed_dim), float32
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        with torch_threads(working_n_jobs(self.n_jobs)):
            emb = _clip.encode_text(self._loaded(), list(texts)).numpy()
        return self._finish(emb)

    # ---------------------------------------------------------- internals
    def _finish(self, emb):
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32, copy=False)

    def _embed(self, items):
        keys = [item_key(item, i) for i, item in enumerate(items)]
        spec, loaded = self._spec(), None
        if spec.fingerprint is None:  # random weights: this process's model is the key
            loaded = self._loaded(spec)
        precision = self.precision
        if precision == "amp":  # autocasts to fp16 on CUDA, bf16 elsewhere: not one key
            on_cuda = resolve_device(self.device).type == "cuda"
            precision = "amp-fp16" if on_cuda else "amp-bf16"
        # the decoding's version too: features cached by an older decoding, or decoded
        # on the GPU for a PIL run (or the other way round), stay unseen
        model_key = (f"{spec.fingerprint or loaded.fingerprint}|{precision}"
                     f"|decoding {DECODING_VERSION}")
        on_gpu = self._may_decode_on_gpu()  # decided without starting CUDA
        caches = caches_for(self.cache, disk=spec.fingerprint is not None)
        found = self._cached(caches, self._decoding_key(model_key, on_gpu), keys, {},
                             spec.embed_dim)
        if len(found) < len(set(keys)) and on_gpu and not _gpu_images.decodes_on(
                resolve_device(self.device)):  # no nvJPEG there after all: PIL's features
            on_gpu = False
            found = self._cached(caches, model_key, keys, found, spec.embed_dim)
        first = {}  # each distinct missing image is encoded once, at its first index
        for i, k in enumerate(keys):
            if k not in found and k not in first:
                first[k] = i
        if first:
            self._encode_missing(loaded or self._loaded(spec), items, keys,
                                 list(first.values()), caches,
                                 self._decoding_key(model_key, on_gpu), found, on_gpu)
        return self._finish(np.stack([found[k] for k in keys]))

    @staticmethod
    def _decoding_key(model_key, on_gpu):
        return model_key + (f"|{_gpu_images.GPU_DECODING}" if on_gpu else "")

    @staticmethod
    def _cached(caches, model_key, keys, found, dim):
        """``found`` with the features of ``keys`` (of length ``dim``) that the caches hold
        under ``model_key``, each copied into the faster caches before the one that had
        it."""
        for depth, cache in enumerate(caches):
            missing = [k for k in dict.fromkeys(keys) if k not in found]
            if not missing:
                break
            hits = cache.get_many(model_key, missing, dim)
            for faster in caches[:depth]:  # the memory cache serves them next time
                faster.put_many(model_key, hits)
            found.update(hits)
        return found

    def _may_decode_on_gpu(self):
        """Whether this call means to decode JPEG files on the GPU (``decode="auto"`` and a
        CUDA device): the cache key's decoding. Whether nvJPEG works there is asked only
        when something must be encoded (a cache hit starts no CUDA context)."""
        if self.decode != "auto":
            return False
        try:
            return resolve_device(self.device).type == "cuda"
        except ValueError:  # loading the model says so, if it comes to that
            return False

    def _encode_missing(self, loaded, items, keys, todo, caches, model_key, found,
                        on_gpu=False):
        """Encode ``items[todo]`` into ``found``, storing them in the caches as they
        come, and on the way out whatever happens (never lose finished work)."""
        pending = {}

        def flush():
            if pending:
                batch = dict(pending)
                pending.clear()
                for cache in caches:
                    cache.put_many(model_key, batch)

        try:
            for positions, emb in self._encode(loaded, items, todo, on_gpu):
                new = {keys[i]: e for i, e in zip(positions, emb)}
                found.update(new)
                pending.update(new)
                if len(pending) >= _FLUSH_EVERY:
                    flush()
        finally:
            flush()

    def _encode(self, loaded, items, todo, on_gpu=False):
        """Yield ``(indices, raw float32 embeddings)`` for ``items[todo]``.

        Results stay on a CUDA device until a flush, so that the host does not wait for
        the GPU after every batch."""
        cuda = loaded.device.type == "cuda"
        batches, inputs = self._inputs(loaded, items, todo, on_gpu)
        held, held_at, done = [], [], 0
        # inputs closes first: its thread may be reading from batches
        with contextlib.closing(batches), contextlib.closing(inputs), tqdm(
                total=len(todo), desc="ClipEmbedder", unit="img",
                disable=not self.verbose) as bar:
            for n, x in inputs:
                with torch.inference_mode(), loaded.autocast():
                    held.append(loaded.model.encode_image(x).float())
                held_at.extend(todo[done:done + n])
                done += n
                bar.update(n)
                if not cuda or len(held_at) >= _FLUSH_EVERY or done == len(todo):
                    yield held_at, torch.cat(held).cpu().numpy()
                    held, held_at = [], []

    def _inputs(self, loaded, items, todo, on_gpu):
        """``(host batches, (size, model input) of each)``, decoded ahead of the model.

        Threads decode and preprocess with PIL; on CUDA, uint8 batches are pinned,
        copied without blocking and normalised on the device. With ``on_gpu`` (and a
        preprocess of the usual form), the threads only read JPEG files, which a thread
        of its own decodes and preprocesses on the device, a batch ahead."""
        cuda = loaded.device.type == "cuda"
        workers = self.num_workers if len(todo) > 1 else 0
        plan = _gpu_images.tensor_plan(loaded.preprocess) if on_gpu else None
        prep = (_gpu_images.JpegBatchPreprocess(loaded.preprocess, plan) if plan
                else BatchPreprocess(loaded.preprocess))
        batches = iter_batches([items[i] for i in todo], todo, prep, self.batch_size, workers,
                               pin_memory=cuda and not plan)
        if plan:
            return batches, _gpu_images.prepared_ahead(batches, prep, loaded.device,
                                                       loaded.input_dtype)
        return batches, ((len(b), prep.to_device(b, loaded.device, loaded.input_dtype, cuda))
                         for b in batches)


def release_memory_cache():
    """Empty the process-wide memory cache of embeddings (a long-lived worker's disk
    cache, or its caller, keeps them)."""
    MEMORY.clear()


def __getattr__(name):
    if name == "make_candle_pipeline":  # moved; the public name is candle_sklearn's
        import warnings

        from .pipeline import make_candle_pipeline

        warnings.warn("candle_sklearn.embedder.make_candle_pipeline is deprecated and will "
                      "be removed in 0.3: import it from candle_sklearn",
                      FutureWarning, stacklevel=2)
        return make_candle_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
