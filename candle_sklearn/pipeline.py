"""make_candle_pipeline: ClipEmbedder then CandleClassifier, one CLIP model for image
and text features, kept in step through clone, set_params and grid searches."""

from sklearn.pipeline import Pipeline

from .classifier import CandleClassifier
from .embedder import ClipEmbedder

__all__ = ["CandlePipeline", "make_candle_pipeline"]


class CandlePipeline(Pipeline):
    """A :class:`~sklearn.pipeline.Pipeline` whose final classifier embeds class names
    with the pipeline's own :class:`ClipEmbedder` step.

    Candle compares image features with text features, so both must come from one
    CLIP model. ``clone`` (which ``GridSearchCV`` and ``cross_val_score`` call) copies
    the steps one by one and would leave the classifier's ``encoder`` a separate copy
    of the embedder; a grid over ``clip__model_name`` would then change the image
    features but not the text ones. This pipeline makes the classifier's ``encoder``
    the first step again after every clone and at every ``fit``. It does so only when
    the first step is a :class:`ClipEmbedder` and the classifier's ``encoder`` is one
    too (an encoder of another kind is left alone).

    Parameters are those of :class:`~sklearn.pipeline.Pipeline`; build it with
    :func:`make_candle_pipeline`.
    """

    def _share_encoder(self):
        embedder, classifier = self.steps[0][1], self.steps[-1][1]
        if (isinstance(embedder, ClipEmbedder) and len(self.steps) > 1
                and isinstance(getattr(classifier, "encoder", None), ClipEmbedder)):
            classifier.encoder = embedder
        return self

    def __sklearn_clone__(self):
        return super().__sklearn_clone__()._share_encoder()

    def fit(self, X, y=None, **params):
        """Fit the steps (see :meth:`sklearn.pipeline.Pipeline.fit`), with the
        classifier's ``encoder`` set to the embedding step first."""
        self._share_encoder()
        return super().fit(X, y, **params)

    def add_classes(self, classes, class_names=None, text_features=None):
        """Add classes known only by name to the fitted classifier, without retraining:
        :meth:`CandleClassifier.add_classes`, their names embedded by the pipeline's own
        CLIP model. Returns the pipeline."""
        self._share_encoder()
        final = self.steps[-1][1]
        if not hasattr(final, "add_classes"):
            raise TypeError(f"the final step, {type(final).__name__}, cannot add classes")
        final.add_classes(classes, class_names=class_names, text_features=text_features)
        return self


def make_candle_pipeline(model_name="ViT-B-16", pretrained="openai", *, embedder_params=None,
                         **classifier_params):
    """``CandlePipeline([("clip", ClipEmbedder), ("candle", CandleClassifier)])``
    sharing one model.

    The classifier gets the embedder as its ``encoder``, so class names become text
    prototypes through the same CLIP model; both load it from the process-wide cache.
    The sharing survives ``clone`` and ``set_params``: a grid over
    ``clip__model_name`` or ``clip__pretrained`` changes image and text features
    together.

    Parameters
    ----------
    model_name, pretrained : see :class:`ClipEmbedder`
    embedder_params : dict, optional
        More :class:`ClipEmbedder` parameters (device, batch_size, ...).
    **classifier_params
        :class:`~candle_sklearn.CandleClassifier` parameters (classes, tau, ...).

    Returns
    -------
    pipeline : CandlePipeline
    """
    embedder = ClipEmbedder(model_name, pretrained, **(embedder_params or {}))
    classifier = CandleClassifier(encoder=embedder, **classifier_params)
    return CandlePipeline([("clip", embedder), ("candle", classifier)])
