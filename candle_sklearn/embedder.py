"""ClipEmbedder: open_clip image features behind a scikit-learn transformer."""

import os
from numbers import Integral

import numpy as np
import torch
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                          _fit_context)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import _clip
from ._cache import caches_for
from ._images import ImageDataset, as_items, item_key
from ._train import resolve_device


class ClipEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """CLIP image features from an open_clip model.

    The model is loaded at first use (never in ``__init__``) into a process-wide cache
    keyed by (model, weights, device, precision): every clone of the estimator, and a
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
        shipped with this package), or None for random weights.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision : {"fp32", "fp16", "bf16", "amp"}, default="fp32"
        Model precision; ``"amp"`` runs fp32 weights under autocast (fp16 on CUDA,
        bf16 on CPU); ``"fp16"`` needs CUDA. Outputs are float32 in every case.
    batch_size : int, default=64
        Images per forward pass.
    num_workers : int, default=2
        DataLoader worker processes that decode and preprocess images off the main
        process (0: decode in the main process).
    normalize : bool, default=True
        L2-normalise the embeddings (as CLIP's zero-shot classifier does).
    cache : bool or str, default=True
        True: keep embeddings in a process-wide memory cache; a directory: also in an
        SQLite file there, keyed by path, modification time and size (files) or content
        hash (images in memory); False: no cache.
    verbose : int, default=0
        Progress bar over images being encoded.

    Attributes
    ----------
    embed_dim_ : int
        Dimension of the embeddings (number of output features).

    Examples
    --------
    >>> from candle_sklearn import ClipEmbedder
    >>> emb = ClipEmbedder("ViT-B-32", pretrained=None, device="cpu")  # random weights
    >>> import numpy as np
    >>> emb.fit_transform([np.zeros((64, 64, 3), dtype=np.uint8)]).shape
    (1, 512)
    """

    _parameter_constraints: dict = {
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "device": [str],
        "precision": [StrOptions(set(_clip.PRECISIONS))],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "normalize": ["boolean"],
        "cache": ["boolean", str, os.PathLike],
        "verbose": ["verbose"],
    }

    def __init__(self, model_name="ViT-B-16", pretrained="openai", *, device="auto",
                 precision="fp32", batch_size=64, num_workers=2, normalize=True, cache=True,
                 verbose=0):
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.normalize = normalize
        self.cache = cache
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # a list of images, not a feature matrix
        tags.input_tags.string = True  # file paths
        tags.transformer_tags.preserves_dtype = []  # always float32
        # cuDNN convolutions and reduced precision are not bitwise reproducible
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags

    # -------------------------------------------------------------- model
    def _loaded(self):
        return _clip.load(self.model_name, self.pretrained, resolve_device(self.device),
                          self.precision)

    def _model_key(self):
        return f"{self.model_name}|{self.pretrained}|{self.precision}"

    @property
    def _n_features_out(self):
        return self.embed_dim_

    # ---------------------------------------------------------- sklearn API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the input and load the model (nothing is learned).

        Parameters
        ----------
        X : list of images
            Paths (str or ``pathlib.Path``), PIL images, uint8 arrays (H, W, 3) or
            (H, W), a 4-D array (n, H, W, 3), or a one-column DataFrame of these.
        y : ignored

        Returns
        -------
        self : ClipEmbedder
        """
        as_items(X)
        self.embed_dim_ = self._loaded().embed_dim
        return self

    def transform(self, X):
        """Embed images.

        Returns
        -------
        features : ndarray of shape (n_images, embed_dim_), float32
        """
        check_is_fitted(self)
        return self._embed(as_items(X))

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
        emb = _clip.encode_text(self._loaded(), list(texts)).numpy()
        return self._finish(emb)

    # ---------------------------------------------------------- internals
    def _finish(self, emb):
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32, copy=False)

    def _embed(self, items):
        keys = [item_key(item, i) for i, item in enumerate(items)]
        caches, model_key = caches_for(self.cache), self._model_key()
        found = {}
        for cache in caches:
            missing = list({k for k in keys if k not in found})
            if missing:
                found.update(cache.get_many(model_key, missing))
        first = {}  # each distinct missing image is encoded once, at its first index
        for i, k in enumerate(keys):
            if k not in found and k not in first:
                first[k] = i
        if first:
            new = self._encode([items[i] for i in first.values()], list(first.values()))
            new = dict(zip(first, new))
            for cache in caches:
                cache.put_many(model_key, new)
            found.update(new)
        return self._finish(np.stack([found[k] for k in keys]))

    @torch.inference_mode()
    def _encode(self, items, indices):
        """Raw embeddings of ``items`` (decoded in DataLoader workers), float32."""
        loaded = self._loaded()
        cuda = loaded.device.type == "cuda"
        workers = self.num_workers if len(items) > self.batch_size else 0
        loader = DataLoader(ImageDataset(items, indices, loaded.preprocess),
                            batch_size=self.batch_size, num_workers=workers, pin_memory=cuda)
        out = []
        batches = iter(loader)
        try:
            with tqdm(total=len(items), desc="ClipEmbedder", unit="img",
                      disable=not self.verbose) as bar:
                for batch in batches:
                    batch = batch.to(loaded.device, loaded.input_dtype, non_blocking=cuda)
                    with loaded.autocast():
                        out.append(loaded.model.encode_image(batch).float().cpu().numpy())
                    bar.update(len(batch))
        finally:
            # A failed image leaves the iterator referenced by the traceback; stop its
            # workers now rather than whenever it is collected.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        return list(np.concatenate(out))


def make_candle_pipeline(model_name="ViT-B-16", pretrained="openai", *, embedder_params=None,
                         **classifier_params):
    """``Pipeline([("clip", ClipEmbedder), ("candle", CandleClassifier)])`` sharing one model.

    The classifier gets the embedder as its ``encoder``, so class names become text
    prototypes through the same CLIP model; both load it from the process-wide cache.

    Parameters
    ----------
    model_name, pretrained : see :class:`ClipEmbedder`
    embedder_params : dict, optional
        More :class:`ClipEmbedder` parameters (device, batch_size, ...).
    **classifier_params
        :class:`~candle_sklearn.CandleClassifier` parameters (classes, tau, ...).
    """
    from sklearn.pipeline import Pipeline

    from .classifier import CandleClassifier

    embedder = ClipEmbedder(model_name, pretrained, **(embedder_params or {}))
    classifier = CandleClassifier(encoder=embedder, **classifier_params)
    return Pipeline([("clip", embedder), ("candle", classifier)])
