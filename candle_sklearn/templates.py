"""Prompt templates and open_clip interop.

A template turns a class name into a prompt. Everywhere the package takes ``templates``,
it accepts:

- a format string with one ``{}`` field, e.g. ``"a photo of a {}."``;
- a callable ``name -> prompt``, as in ``open_clip.zero_shot_metadata``
  (``OPENAI_IMAGENET_TEMPLATES`` and ``SIMPLE_IMAGENET_TEMPLATES`` are tuples of lambdas);
- a sequence mixing both;
- a preset name from :data:`PRESETS` (``"openai_imagenet"``, ``"simple_imagenet"``, or
  the CoOp template of a reference dataset such as ``"oxford_pets"``).

``open_clip.build_zero_shot_classifier`` returns text features of shape
``(embed_dim, n_classes)``; :func:`text_features_from_open_clip` turns them into the
``(n_classes, embed_dim)`` layout that ``text_features`` parameters take.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Union

import numpy as np

Template = Union[str, Callable[[str], str]]
Templates = Union[str, Template, Sequence[Template]]

DEFAULT_TEMPLATE = "a photo of a {}."

# CoOp's hand-written prompt per reference dataset (docs/method.md, table of datasets).
COOP_TEMPLATES = {
    "imagenet": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "sun397": "a photo of a {}.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.",
}


def _open_clip_set(attribute):
    def load():
        from open_clip import zero_shot_metadata

        return tuple(as_format_string(t) for t in getattr(zero_shot_metadata, attribute))
    return load


# name -> zero-argument function returning a tuple of format strings (open_clip's sets
# are read from the installed open_clip, not copied).
_PRESET_LOADERS = {
    "openai_imagenet": _open_clip_set("OPENAI_IMAGENET_TEMPLATES"),
    "simple_imagenet": _open_clip_set("SIMPLE_IMAGENET_TEMPLATES"),
    **{name: (lambda t=t: (t,)) for name, t in COOP_TEMPLATES.items()},
}
PRESETS = tuple(_PRESET_LOADERS)
"""Names accepted as ``templates``: open_clip's ImageNet sets and CoOp's per-dataset
templates."""


def preset(name: str) -> tuple[str, ...]:
    """The format strings of a named template set (see :data:`PRESETS`)."""
    try:
        return _PRESET_LOADERS[name]()
    except KeyError:
        raise ValueError(f"unknown template preset {name!r}; presets: {list(PRESETS)}, "
                         "or pass a format string with one '{}' field") from None


def _check_format_string(template):
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if fields != [""] and fields != ["0"]:
        raise ValueError(f"template {template!r} must have exactly one '{{}}' field for the "
                         f"class name, found {len(fields)} field(s): {fields}")


def as_format_string(template: Template) -> str:
    """The format string equivalent to ``template``.

    A callable is probed with a marker name, and accepted only when the resulting
    format string reproduces it on other names (open_clip's lambdas ``f'... {c} ...'``
    do); use this to store templates as text (:func:`candle_sklearn.save`).
    """
    if isinstance(template, str):
        _check_format_string(template)
        return template
    if not callable(template):
        raise TypeError(f"a template must be a format string or a callable, "
                        f"got {type(template).__name__}: {template!r}")
    marker = "\x00name\x00"
    probe = template(marker)
    if not isinstance(probe, str) or probe.count(marker) != 1 or "{" in probe or "}" in probe:
        raise ValueError(f"template {template!r} cannot be written as a format string")
    fmt = probe.replace(marker, "{}")
    for name in ("dog", "Golden Retriever", "x-1"):
        if fmt.format(name) != template(name):
            raise ValueError(f"template {template!r} cannot be written as a format string: "
                             f"it gives {template(name)!r} for {name!r}")
    return fmt


def resolve_templates(templates: Templates | None) -> list[Callable[[str], str]]:
    """Functions ``name -> prompt``, one per template; None gives the default
    ``"a photo of a {}."``.

    Raises ``ValueError`` for an empty sequence, a string that is neither a preset nor a
    format string with one ``{}`` field, or a format string with other fields.
    """
    if templates is None:
        templates = (DEFAULT_TEMPLATE,)
    elif isinstance(templates, str):
        templates = (templates,) if "{" in templates else preset(templates)
    elif callable(templates):
        templates = (templates,)
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty; pass at least one template (or None)")
    out = []
    for t in templates:
        if isinstance(t, str):
            _check_format_string(t)
            out.append(t.format)
        elif callable(t):
            out.append(_checked_callable(t))
        else:
            raise TypeError(f"a template must be a format string or a callable, "
                            f"got {type(t).__name__}: {t!r}")
    return out


def _checked_callable(template):
    def fill(name):
        prompt = template(name)
        if not isinstance(prompt, str):
            raise TypeError(f"template {template!r} returned {type(prompt).__name__} for "
                            f"{name!r}; a template must return a str")
        return prompt
    return fill


def prompts(templates: Templates | None, name: str) -> list[str]:
    """Every template filled with one class name (underscores become spaces)."""
    name = str(name).replace("_", " ")
    return [fill(name) for fill in resolve_templates(templates)]


def encode_class_names(encoder, names, templates: Templates | None = None) -> np.ndarray:
    """Text features (n_classes, D) of class names, as open_clip's zero-shot classifier
    builds them: per class, the mean of the L2-normalised embeddings of every template
    filled with the name (underscores become spaces), normalised again.

    Parameters
    ----------
    encoder : object with ``encode_text(list[str]) -> ndarray``
        For instance a :class:`~candle_sklearn.ClipEmbedder`.
    names : sequence of str
    templates : str, callable or sequence of them, default=None
        See :func:`resolve_templates`.

    Returns
    -------
    text_features : ndarray of shape (n_classes, D), float32
    """
    names = [str(n).replace("_", " ") for n in names]
    total = None
    for fill in resolve_templates(templates):
        emb = np.asarray(encoder.encode_text([fill(n) for n in names]), dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(names):
            raise ValueError(f"encoder.encode_text returned shape {emb.shape} for "
                             f"{len(names)} prompts; expected ({len(names)}, dim)")
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        if not np.isfinite(emb).all() or (bad := np.flatnonzero(norm[:, 0] == 0)).size:
            which = ("non-finite values" if not np.isfinite(emb).all() else
                     f"a zero vector for {[fill(names[i]) for i in bad[:3]]}")
            raise ValueError(f"encoder.encode_text returned {which}: no direction to "
                             "compare images with")
        emb /= norm
        total = emb if total is None else total + emb
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    if (bad := np.flatnonzero(norm[:, 0] == 0)).size:  # templates that cancel out
        raise ValueError(f"the templates' text features of {[names[i] for i in bad[:3]]} "
                         "sum to zero")
    return (total / norm).astype(np.float32)


def text_features_from_open_clip(zero_shot_weights, n_classes: int) -> np.ndarray:
    """Text features (n_classes, embed_dim) from ``open_clip.build_zero_shot_classifier``.

    open_clip returns its zero-shot classifier as ``(embed_dim, n_classes)``, one column
    per class; candle_sklearn takes one row per class. The rule is fixed, never guessed
    from the shape: the input is always taken in open_clip's layout and transposed, so
    a square matrix (embed_dim == n_classes) is transposed too. ``n_classes`` is checked
    against the number of columns, which catches an input that was already transposed.

    Parameters
    ----------
    zero_shot_weights : array-like or torch.Tensor of shape (embed_dim, n_classes)
    n_classes : int
        Number of classes the weights were built for (``len(classnames)``).

    Returns
    -------
    text_features : ndarray of shape (n_classes, embed_dim), float32
    """
    if hasattr(zero_shot_weights, "detach"):  # a torch tensor, possibly on a GPU
        zero_shot_weights = zero_shot_weights.detach().float().cpu().numpy()
    weights = np.asarray(zero_shot_weights, dtype=np.float32)
    if weights.ndim != 2:
        raise ValueError(f"open_clip zero-shot weights must be 2-D (embed_dim, n_classes), "
                         f"got shape {weights.shape}")
    if weights.shape[1] != n_classes:
        hint = (" (it looks already transposed to (n_classes, embed_dim): pass it as "
                "text_features directly)" if weights.shape[0] == n_classes else "")
        raise ValueError(f"open_clip zero-shot weights have shape {weights.shape}, expected "
                         f"(embed_dim, {n_classes}){hint}")
    return np.ascontiguousarray(weights.T)
