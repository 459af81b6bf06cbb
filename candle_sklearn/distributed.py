"""Embedding beyond one machine: image files through :class:`ClipEmbedder` on a Ray
cluster, with ``ray.data`` ``map_batches`` over a pool of actors that each load the
model once (one GPU each when the cluster has GPUs).

Needs the ``ray`` extra: ``pip install candle-sklearn[ray]``. Ray is imported only
when a function here runs; ``import candle_sklearn.distributed`` works without it.

Each actor runs the embedder's own ``transform`` (same decoding, preprocessing, model
and normalisation, same cache keys), so the embeddings are those that
``ClipEmbedder.transform`` returns on one machine, and an embedder with
``cache="<folder>"`` fills that folder's disk cache as it goes: a later ``transform``
with the same weights reads the rows there instead of encoding, and a run that stops
half-way resumes where it stopped.

- :func:`embed_paths`: a NumPy array in the order of the input paths, ready for
  ``CandleClassifier.fit``.
- :func:`embed_dataset`: the lazy ``ray.data.Dataset`` (columns ``path``, ``index``,
  ``embedding``) for data sets larger than the driver's memory; write it with
  ``write_parquet`` or stream it with ``iter_batches``.
- :class:`EmbedBatch`: the callable class the actors run, for pipelines of your own.
"""

import json
import math
import os
import re
import tempfile
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .embedder import ClipEmbedder, release_memory_cache
from .exceptions import ImageInputError

__all__ = ["EmbedBatch", "embed_dataset", "embed_paths"]

_INSTALL = "pip install candle-sklearn[ray]"
# Rows per input block, in batches: enough blocks for every actor to stream several,
# small enough that an output block (rows x embed_dim float32) stays a few MB.
_MAX_BATCHES_PER_BLOCK = 16


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the ``data`` part of the extra
    except ImportError as exc:
        raise ImportError(f"candle_sklearn.distributed needs Ray Data ({exc}); install "
                          f"the extra: {_INSTALL}") from None
    return ray


# ------------------------------------------------------------ the actors
def _register_model_config(model_name, config):
    """Make ``model_name`` known to open_clip in this process (a config that the driver
    registered with ``open_clip.add_model_config`` is unknown to a fresh worker)."""
    import open_clip

    if model_name in open_clip.list_models():
        return
    folder = Path(tempfile.mkdtemp(prefix="candle-open-clip-config-"))
    (folder / f"{model_name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{model_name}.json")


class EmbedBatch:
    """The callable class that ``map_batches`` runs in each actor: one model per actor,
    loaded in ``__init__``, then ``ClipEmbedder.transform`` on every batch.

    Parameters
    ----------
    params : dict
        ``ClipEmbedder`` parameters (``embedder.get_params()``, with the actor's device).
    column : str, default="path"
        The batch column holding image file paths.
    model_config : dict, optional
        An open_clip model config registered under ``params["model_name"]`` if this
        process does not know that name.
    fingerprint : str, optional
        The weights fingerprint the driver resolved; an actor that resolves other
        weights (another file at the same path on its node) raises instead of writing
        embeddings of another model.

    ``__call__`` takes a batch (a dict of NumPy arrays) and returns it with an
    ``embedding`` column, float32 of shape (rows, embed_dim).
    """

    def __init__(self, params, column="path", model_config=None, fingerprint=None):
        if model_config is not None:
            _register_model_config(params["model_name"], model_config)
        self.column = column
        self.embedder = ClipEmbedder(**params)
        spec = self.embedder.resolve_weights()
        if fingerprint is not None and spec.fingerprint != fingerprint:
            raise RuntimeError(
                f"the weights of {params['model_name']!r} ({params['pretrained']!r}) resolve "
                f"on this Ray node to {spec.checkpoint} with fingerprint "
                f"{spec.fingerprint}, not the driver's {fingerprint}: every node must see "
                "the same checkpoint file")
        self.embedder.load_model()  # at start-up, once: not inside the first batch

    def __call__(self, batch):
        items = [os.fspath(p) if isinstance(p, os.PathLike) else str(p)
                 for p in batch[self.column]]
        try:
            emb = self.embedder.transform(items)
        finally:
            # The process-wide memory cache would hold every embedding this actor ever
            # made; the disk cache (cache="<folder>") has them, the driver has the rows.
            release_memory_cache()
        return {**batch, "embedding": emb}


# ------------------------------------------------------------ the driver
def _actor_device(device, num_gpus):
    """The device an actor's embedder uses: Ray shows a GPU actor its GPU(s) as cuda:0
    upwards, and a CPU actor must not take a GPU that Ray did not give it."""
    cuda = device == "cuda" or device.startswith("cuda:")
    if num_gpus:
        if device not in ("auto",) and not cuda:
            raise ValueError(f"num_gpus={num_gpus} with device={device!r}: GPU actors run "
                             "on CUDA; use device='auto' or 'cuda', or num_gpus=0")
        return "cuda"
    if cuda:
        raise ValueError(f"device={device!r} needs GPU actors: pass num_gpus=1 (or a "
                         "fraction) so that Ray gives each actor a GPU")
    return "cpu" if device == "auto" else device


def _resources(ray, embedder, num_actors, num_gpus, num_cpus):
    """(num_gpus, compute strategy, most actors) from the arguments and, where they
    say None, from the cluster: GPU actors when it has GPUs (and the embedder is not
    told 'cpu'), as many as there are GPUs; else an autoscaling pool up to the
    cluster's CPUs."""
    if num_gpus is None or num_actors is None:
        if not ray.is_initialized():
            ray.init()
        total = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1 if total.get("GPU", 0) >= 1 and embedder.device != "cpu" else 0
    if not isinstance(num_gpus, Real) or num_gpus < 0:
        raise ValueError(f"num_gpus must be a number >= 0, got {num_gpus!r}")
    if num_actors is None:
        if num_gpus:
            num_actors = max(1, int(total.get("GPU", 0) // num_gpus))
        else:
            num_actors = (1, max(1, int(total.get("CPU", 1) // (num_cpus or 1))))
    if isinstance(num_actors, Integral) and num_actors >= 1:
        compute, most = ray.data.ActorPoolStrategy(size=int(num_actors)), int(num_actors)
    elif (isinstance(num_actors, tuple) and len(num_actors) == 2
          and all(isinstance(n, Integral) and n >= 1 for n in num_actors)
          and num_actors[0] <= num_actors[1]):
        compute = ray.data.ActorPoolStrategy(min_size=int(num_actors[0]),
                                             max_size=int(num_actors[1]))
        most = int(num_actors[1])
    else:
        raise ValueError(f"num_actors must be an int >= 1 or a (min, max) pair, got "
                         f"{num_actors!r}")
    return num_gpus, compute, most


def _paths_dataset(ray, paths, column, rows_per_block):
    """A Dataset of ``column`` (absolute paths: actors may run in another folder) and
    ``index`` (the input position), in blocks that the actors share out."""
    import pyarrow as pa

    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    table = pa.table({column: paths, "index": np.arange(len(paths), dtype=np.int64)})
    blocks = [table.slice(start, rows_per_block)
              for start in range(0, len(paths), rows_per_block)]
    return ray.data.from_arrow(blocks)


def embed_dataset(data, embedder, *, column="path", num_actors=None, num_gpus=None,
                  num_cpus=None, batch_size=None, **ray_remote_args):
    """Embed image files on a Ray cluster; lazy.

    Parameters
    ----------
    data : sequence of paths, or ray.data.Dataset
        Image file paths (str or ``pathlib.Path``; made absolute here), or a Dataset
        with a column of paths (``column``) that every Ray node can read.
    embedder : ClipEmbedder
        The model, preprocessing, normalisation and cache to use. Its weights must be
        pretrained (random weights differ in every actor) and reachable from every
        node: a tag that each node can load from its cache or download, or a file or
        ``local-dir:`` folder at the same path everywhere. ``cache="<folder>"``: the
        actors also write the embeddings there (and skip the images already in it);
        the folder must be reachable by every actor, on a file system whose locks
        SQLite can rely on (local disks; many network file systems are not).
        ``device`` follows ``num_gpus``; the other parameters are used as they are.
    column : str, default="path"
        The column of paths, in a Dataset input and in the output.
    num_actors : int or (int, int), optional
        Actors, each with its own copy of the model: a fixed pool, or (min, max) for an
        autoscaling one. Default: one per GPU for GPU actors, else an autoscaling pool
        of 1 up to the cluster's CPUs over ``num_cpus``.
    num_gpus : float, optional
        GPUs per actor (a fraction puts several actors on one GPU). Default: 1 when
        the cluster has GPUs and the embedder's ``device`` is not ``"cpu"``, else 0.
    num_cpus : float, optional
        CPUs per actor (Ray's default: 1). The actor's torch threads follow it (the
        embedder's ``n_jobs`` when set wins); the embedder's decoding threads
        (``num_workers``) come on top.
    batch_size : int, optional
        Rows per actor call (default: the embedder's ``batch_size``, one forward pass).
    **ray_remote_args
        Passed to ``map_batches``: ``runtime_env``, ``memory``, ``accelerator_type``...

    Returns
    -------
    dataset : ray.data.Dataset
        The input's columns (for a sequence: ``column`` and ``index``, the input
        position) plus ``embedding`` (float32, embed_dim). Rows may come out of
        order: join on ``index`` (or the path), or set
        ``ray.data.DataContext.get_current().execution_options.preserve_order = True``.
        Nothing runs until it is consumed (``materialize``, ``iter_batches``,
        ``write_parquet``...).
    """
    ray = _import_ray()
    if not isinstance(data, ray.data.Dataset):
        if isinstance(data, (str, os.PathLike)):
            raise TypeError("expected a collection of image paths; wrap a single path in "
                            "a list")
        data = list(data)
        if not data:
            raise ValueError("no images: the input is empty")
    if not isinstance(embedder, ClipEmbedder):
        raise TypeError(f"embedder must be a ClipEmbedder, got {type(embedder).__name__}")
    spec = embedder.resolve_weights()  # on the driver: a missing checkpoint fails here
    if spec.fingerprint is None:
        raise ValueError("pretrained=None gives random weights, which differ in every "
                         "Ray actor; pass pretrained weights (a tag, a file, 'bundled' or "
                         "'local-dir:...')")
    if batch_size is None:
        batch_size = embedder.batch_size
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    num_gpus, compute, actors = _resources(ray, embedder, num_actors, num_gpus, num_cpus)
    local = spec.from_local_dir  # the folder holds the config
    params = embedder.get_params()
    cache = embedder.cache  # a folder, absolute as the paths: actors may run elsewhere
    params.update(device=_actor_device(embedder.device, num_gpus), verbose=0,
                  cache=False if cache in (True, False) else os.path.abspath(cache))
    if params["n_jobs"] is None and num_cpus is not None:  # torch threads = its CPUs
        params["n_jobs"] = max(1, int(num_cpus))
    if not isinstance(data, ray.data.Dataset):
        # Blocks of whole batches: every forward pass then holds the images that
        # transform(paths) would put in it, so the results are bitwise the same.
        batches = min(math.ceil(len(data) / (4 * actors * batch_size)),
                      _MAX_BATCHES_PER_BLOCK)
        data = _paths_dataset(ray, data, column, max(1, batches) * batch_size)
    return data.map_batches(
        EmbedBatch, batch_size=int(batch_size), batch_format="numpy", compute=compute,
        num_gpus=num_gpus or None, num_cpus=num_cpus,
        fn_constructor_kwargs=dict(params=params, column=column,
                                   model_config=None if local else dict(spec.config),
                                   fingerprint=spec.fingerprint),
        **ray_remote_args)


def embed_paths(paths, embedder, *, num_actors=None, num_gpus=None, num_cpus=None,
                batch_size=None, **ray_remote_args):
    """Embed image files on a Ray cluster; the array that ``embedder.transform(paths)``
    returns on one machine.

    Runs :func:`embed_dataset` and gathers the embeddings on the driver, in the order
    of ``paths`` (n x embed_dim float32: 2 KiB an image at 512 dimensions, 20 GB for
    10 million; beyond the driver's memory, consume :func:`embed_dataset` instead).
    Parameters as for :func:`embed_dataset`.

    Returns
    -------
    features : ndarray of shape (len(paths), embed_dim), float32

    Examples
    --------
    >>> from candle_sklearn import CandleClassifier, ClipEmbedder
    >>> from candle_sklearn.distributed import embed_paths
    >>> emb = ClipEmbedder("ViT-B-16", "openai", cache="/shared/clip-cache")
    >>> X = embed_paths(paths, emb, num_gpus=1)  # doctest: +SKIP
    >>> clf = CandleClassifier(classes=labels, encoder=emb).fit(X, y)  # doctest: +SKIP
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("expected a collection of image paths; wrap a single path in a list")
    paths = list(paths)
    ds = embed_dataset(paths, embedder, column="path", num_actors=num_actors,
                       num_gpus=num_gpus, num_cpus=num_cpus, batch_size=batch_size,
                       **ray_remote_args)
    try:
        return _gather(ds, len(paths))
    except Exception as exc:
        message = _image_input_error(exc)
        if message is None:
            raise
        # the actor's own error, without Ray's 30 to 50 lines of task wrapping
        raise ImageInputError(message) from None


def _image_input_error(exc):
    """The message of an ImageInputError that an actor raised, from the Ray error that
    reports it (Ray keeps the actor's traceback as text, not the exception), or None.
    Only the last exception of the traceback that is not Ray's own wrapping counts: an
    ImageInputError that another error followed ("During handling of the above
    exception...") did not end the task."""
    if type(exc) is ImageInputError:
        return str(exc)
    lines = [line for line in re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$",
                                         str(exc), re.M) if not line[0].startswith("ray.")]
    if lines and lines[-1][0].rsplit(".", 1)[-1] == "ImageInputError":
        return lines[-1][1].strip()
    return None


def _gather(ds, n):
    """The ``embedding`` column of ``ds`` as an (n, dim) array, row ``index`` at
    ``index`` (Ray may yield rows in any order)."""
    out, seen = None, np.zeros(n, dtype=bool)
    # (no select_columns: a projection stage would wait for CPUs that the actors hold)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        index, emb = batch["index"], np.asarray(batch["embedding"], dtype=np.float32)
        if out is None:
            out = np.empty((n, emb.shape[1]), dtype=np.float32)
        out[index] = emb
        seen[index] = True
    if out is None or not seen.all():  # pragma: no cover - Ray lost rows
        missing = n if out is None else int((~seen).sum())
        raise RuntimeError(f"Ray returned no embedding for {missing} of {n} images")
    return out
