"""CandleClassifier: the Candle head on frozen features as a scikit-learn classifier."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._attenuation import attenuation_gain
from ._base import TextClassifier, as_1d, duplicates, is_text
from ._devices import resolve_device
from ._head import CONTEXTS, CandleHead
from ._inference import scorer_for
from ._params import store_init_arguments
from ._threads import serving_n_jobs, torch_threads, working_n_jobs
from ._train import TrainConfig, auto_lr, seeded, train_head
from .exceptions import TrainingDivergedError
from .templates import encode_class_names

# How each recipe trains (``recipe``), beyond the parameters a user tunes: "reference" is
# the official code's (``trainers/candle.py`` and its example script, shijxcs/Candle).
# ``whiten``: the projections start at the within-class whitening of the training features
# (_within_class_whitening) instead of the identity.
RECIPES = {
    "default": dict(optimizer="adamw", lr=None, momentum=0.9, weight_decay=0.0,
                    warmup_epochs=0, warmup_lr=1e-5, dropout=0.0, context="isolated",
                    whiten=True),
    "reference": dict(optimizer="sgd", lr=3e-4, momentum=0.9, weight_decay=5e-4,
                      warmup_epochs=1, warmup_lr=1e-5, dropout=0.1, context="batch",
                      whiten=False),
}
# The recipe's settings that were parameters before ``recipe`` (deprecated in 0.2).
_DEPRECATED = ("optimizer", "momentum", "weight_decay", "warmup_epochs", "warmup_lr",
               "dropout")
PRECISIONS = ("auto", "fp32", "bf16")

#: The reference code's training and prediction as CandleClassifier parameters: its
#: recipe, its budget (50 epochs, however many steps, of batch 128) and its equal weights
#: of the visual and text logits in prediction. The package's defaults are faster at
#: equal or better accuracy (docs/decisions).
REFERENCE_RECIPE = dict(recipe="reference", batch_size=128, max_epochs=50, max_steps=None,
                        visual_weight=1.0, attenuation_correction=False)


def _head_order(is_new):
    """Indices into ``classes_`` in the head's order: base classes, then new ones."""
    return np.concatenate([np.flatnonzero(~is_new), np.flatnonzero(is_new)])


def _feature_scale(X):
    """Median row norm of ``X``, computed without overflow. The head is invariant to a
    global scale of its input (prototypes are means, every token is layer-normed), so
    dividing by it only keeps float32 arithmetic in range for huge or tiny inputs."""
    peak = float(np.max(np.abs(X)))
    if peak == 0:
        raise ValueError("X is all zeros: there are no features to learn from")
    scale = float(np.median(np.linalg.norm(np.asarray(X, np.float64) / peak, axis=1))) * peak
    return scale if scale > 0 else peak


# Largest absolute value a row keeps, in units of feature_scale_ (see _for_head).
ROW_LIMIT = 1e6


def _for_head(X, scale):
    """``X / scale`` in float32, computed in float64, each row shrunk where needed so that
    its largest value is at most ``ROW_LIMIT``. The head sees a row only through a layer
    norm of a linear map of it, so shrinking a row that large changes none of its scores
    (the norm's epsilon is negligible there), and rows far beyond the training scale
    (times 1e30, say) stay within float32 range instead of overflowing to NaN scores."""
    X = np.array(X, dtype=np.float64)
    peak = np.abs(X).max(axis=1, initial=0.0)
    X /= np.where(peak > ROW_LIMIT * scale, peak / ROW_LIMIT, scale)[:, None]
    return X.astype(np.float32)


# Rows per float64 product in the within-class scatter: bounds the copy (64 MiB at D = 512).
SCATTER_CHUNK = 16384


def _class_means(X, y):
    """The float64 mean (C, D) of each class's rows of ``X`` (summed in chunks of rows)
    and the number of independent deviations from them: n - 1 per class of n."""
    counts = torch.bincount(y).double()
    sums = torch.zeros(len(counts), X.shape[1], dtype=torch.float64)
    for start in range(0, len(X), SCATTER_CHUNK):
        sums.index_add_(0, y[start:start + SCATTER_CHUNK],
                        X[start:start + SCATTER_CHUNK].double())
    return sums / counts.clamp_min(1)[:, None], len(X) - int((counts > 0).sum())


def _within_class_scatter(X, y):
    """The sum over images of ``(x - m_y)(x - m_y)^T`` (D, D), ``m_y`` the mean of the
    image's class, in float64 and in chunks of rows, and the number of independent
    deviations it holds: n - 1 per class of n (its Helmert contrasts, n - 1 deviations
    each distributed as one image's noise, have this same scatter)."""
    X, y = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
    means, n_deviations = _class_means(X, y)
    scatter = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64)
    for start in range(0, len(X), SCATTER_CHUNK):
        dev = X[start:start + SCATTER_CHUNK].double() - means[y[start:start + SCATTER_CHUNK]]
        scatter += dev.T @ dev
    return scatter, n_deviations


def _oas_shrinkage(mu, alpha, p, n_samples):
    """OAS's shrinkage from a covariance's mean eigenvalue ``mu`` = tr / p and mean squared
    entry ``alpha`` = ||cov||_F^2 / p^2, kept in [0, 1] (rounding can make the
    denominator negative when the covariance is isotropic)."""
    den = (n_samples + 1) * (alpha - mu ** 2 / p)
    return 1.0 if den <= 0 else float(((alpha + mu ** 2) / den).clamp(0, 1))


def _oas(cov, n_samples):
    """Chen et al.'s oracle approximating shrinkage of an empirical covariance of
    ``n_samples`` centred samples (scikit-learn's ``oas``, shrinkage kept in [0, 1])."""
    p = cov.shape[0]
    mu = torch.trace(cov) / p
    shrinkage = _oas_shrinkage(mu, (cov ** 2).mean(), p, n_samples)
    return (1 - shrinkage) * cov + shrinkage * mu * torch.eye(p, dtype=cov.dtype)


def _within_class_whitening(X, y):
    """``S^(-1/2)``, a (D, D) float64 tensor, for the OAS-shrunk within-class covariance S of ``X``
    (:func:`_within_class_scatter`), scaled to the identity's Frobenius norm; None with
    fewer than two independent deviations or no variation within classes. Image features
    vary within a class mostly along a few directions that say nothing of the class;
    starting both projections here scores images by the Mahalanobis cosine that
    discriminant analysis uses. The shrinkage (made for fewer samples than dimensions)
    leaves about the identity where the deviations are too few to estimate S or the noise
    is isotropic (docs/decisions/0022)."""
    if len(X) < X.shape[1]:  # the scatter's rank is below n: read it off the Gram matrix
        W = _low_rank_whitening(X, y)
    else:
        scatter, n_deviations = _within_class_scatter(X, y)
        if n_deviations < 2 or not torch.trace(scatter) > 0:  # nothing to estimate S from
            return None
        scatter /= scatter.diagonal().max()  # the scale of S changes nothing but the range
        eigenvalues, V = torch.linalg.eigh(_oas(scatter / n_deviations, n_deviations))
        if not eigenvalues.min() > 0:  # only rounding of a degenerate S can get here
            return None
        W = (V / eigenvalues.sqrt()) @ V.T
    return None if W is None else W * (len(W) ** 0.5 / torch.linalg.norm(W))


def _low_rank_whitening(X, y):
    """:func:`_within_class_whitening`'s ``S^(-1/2)`` (unscaled) for fewer images n than
    features D, without a (D, D) eigendecomposition: the scatter of the n deviations from
    the class means has rank below n, so its eigenvectors come from their (n, n) Gram
    matrix, and every other direction of the OAS-shrunk S has the shrinkage's eigenvalue."""
    X, y = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
    means, n_deviations = _class_means(X, y)
    dev, p = X.double() - means[y], X.shape[1]
    peak = (dev * dev).sum(0).max()  # the scatter's largest diagonal entry
    if n_deviations < 2 or not peak > 0:
        return None
    dev /= (peak * n_deviations).sqrt()  # cov = dev^T dev, as the (D, D) path scales it
    gram_values, U = torch.linalg.eigh(dev @ dev.T)
    keep = gram_values > gram_values.max() * len(X) * torch.finfo(torch.float64).eps
    values, V = gram_values[keep], (dev.T @ U[:, keep]) / gram_values[keep].sqrt()
    # OAS on cov's trace and squared Frobenius norm, both read off the Gram spectrum
    mu = values.sum() / p
    shrinkage = _oas_shrinkage(mu, (values ** 2).sum() / p ** 2, p, n_deviations)
    floor = shrinkage * mu  # S's eigenvalue off the deviations' span
    if not floor > 0:
        return None
    top = (1 - shrinkage) * values + floor
    return torch.eye(p, dtype=torch.float64) / floor.sqrt() + (V * (top.rsqrt()
                                                                    - floor.rsqrt())) @ V.T


def _in_class_order(head_scores, order):
    """Scores in the head's order (base classes, then new) back to ``classes_`` order."""
    scores = np.empty(head_scores.shape, dtype=np.float64)
    scores[:, order] = head_scores.numpy()
    return scores


def prompts_text_features(encoder, names, templates):
    """Text features (C, D): :func:`candle_sklearn.templates.encode_class_names`."""
    return encode_class_names(encoder, names, templates)


class CandleClassifier(TextClassifier):
    """Candle prototype head on frozen (CLIP) image features.

    Base classes (those with training samples in ``y``) get visual prototypes, the
    mean of their training features; new classes (in ``classes`` but absent from
    ``y``) get learnable virtual prototypes initialised from their text features.
    Learnable projections and one cross-modal attention layer fuse image, prototype
    and text tokens; training minimises the compensating logit-adjusted loss, which
    counteracts the long tail of ``y``. See ``docs/method.md``.

    Parameters
    ----------
    classes : array-like of shape (n_classes,), default=None
        Every label the model may predict, including labels that never occur in
        ``y`` (new classes). Default: ``np.unique(y)``.
    class_names : array-like of str of shape (n_classes,), default=None
        Prompt names aligned with ``classes`` (or with ``np.unique(y)``). When the
        labels are strings and this is None, the labels are the names.
    text_features : array-like of shape (n_classes, n_features), default=None
        Precomputed text embeddings aligned with ``classes`` (black-box mode). Takes
        precedence over ``encoder``.
    encoder : object with ``encode_text(list[str]) -> ndarray``, default=None
        Used to embed the prompts of the class names when ``text_features`` is None,
        for instance a :class:`~candle_sklearn.ClipEmbedder`.
    templates : str, callable or sequence of them, default=None
        Prompt templates: format strings (``"a photo of a {}."``), callables such as
        open_clip's ``OPENAI_IMAGENET_TEMPLATES``, or a preset name (see
        :mod:`candle_sklearn.templates`); with several, the normalised embeddings are
        averaged. None: ``"a photo of a {}."``.
    tau : float, default=1.0
        Loss margin: weight of the log class prior added to the logits in training.
        Larger favours rare and new classes; the parameter to tune first (over, say,
        0 to 2, with :class:`~candle_sklearn.model_selection.BaseNewSplit`).
    recipe : {"default", "reference"}, default="default"
        How the head is trained. ``"default"``: AdamW, a cosine schedule, no warm-up,
        no weight decay or dropout, isolated attention context. ``"reference"``: the
        official code's (SGD with momentum 0.9, weight decay 5e-4, one warm-up epoch at
        1e-5, dropout 0.1, batch attention context, lr 3e-4); with its budget and
        prediction it is :data:`~candle_sklearn.REFERENCE_RECIPE`.
    lr : float or "auto", default="auto"
        Peak learning rate. ``"auto"``: the recipe's; for ``"default"``, ``1e-3`` scaled
        down for little data (below 1,000 images) and for features wider than 512.
        The value used is ``lr_``.
    max_steps : int or None, default=200
        Most optimizer steps; the budget is ``max_steps`` or ``max_epochs`` passes over
        the data, whichever ends first (None: no limit of that kind). The steps taken
        are ``n_iter_``.
    max_epochs : int or None, default=20
    batch_size : int, default=128
        Images per step; the C prototype rows are added to every step.
    visual_scale : float, default=1.0
        Scale of the visual (prototype) logits relative to CLIP's logit scale 100, in
        training.
    visual_weight : float, default=0.5
        Weight of the visual logits in prediction, relative to training: scores are
        ``z^vt + visual_weight * z^vv``. 1 predicts as the reference code does; lower
        leans on the text logits, whose projections learn from every image, where a
        long tail leaves the visual prototypes of its rare classes noisy.
    attenuation_correction : bool, default=True
        In prediction, divide each base class's visual logits by how much its
        prototype's noise attenuates them: a prototype averaged over few images has a
        lower cosine with its class's images than one averaged over many, so a long
        tail's rare classes lose to its frequent ones. The factor is estimated from the
        training images after fit, relative to the least attenuated class (a balanced
        training set keeps its scores); ``head_.visual_gain`` holds it. False predicts
        as the reference code does.
    context : {"auto", "isolated", "batch"}, default="auto"
        Attention context in training. ``"isolated"``: an image attends to itself and
        the class tokens. ``"batch"``: every token of a mini-batch attends to every
        token, as in the reference code. ``"auto"``: the recipe's. Prediction is per
        sample in both.
    new_class_bias : float or "auto", default="auto"
        Added to the scores of classes without training images in joint prediction
        (``predict``), where new classes' scores otherwise sit lower than base
        classes'. ``"auto"`` chooses it at fit time without any new-class image: it
        refits on the base classes with some held out as pretend-new classes and picks
        the bias that balances base and new accuracy on them (``calibration_`` says
        how). 0.0 turns the calibration off.
    zero_shot_weight : float in [0, 1] or "auto", default="auto"
        Weight w of zero-shot CLIP's scores in the calibrated scores: ``(1 - w) * head
        + w * zero_shot``, plus ``new_class_bias_`` on new classes. ``"auto"`` chooses
        it with the bias (0 with a fixed bias). ``calibrated=False`` always gives the
        head's own scores.
    calibration_repeats : int, default=3
        Held-out draws (extra fits on part of the data) of ``new_class_bias="auto"``:
        fewer cost less and vary more.
    virtual_init : {"text", "visual"}, default="text"
        Initialisation of the new classes' virtual prototypes.
    tied_text : bool, default=False
        Tie the new classes' text tokens to their virtual prototypes, as the reference
        code does (needs ``virtual_init="text"``); False keeps the text as given.
    num_heads : int, default=8
        Attention heads (reduced to the largest divisor of ``n_features`` not above).
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"mps"``.
    train_precision : {"auto", "fp32", "bf16"}, default="auto"
        Arithmetic of training steps: ``"bf16"`` runs the head's forward pass under
        bfloat16 autocast (parameters, optimizer and loss stay float32); ``"auto"`` does
        so on CUDA and uses float32 elsewhere. Prediction is float32 in every case.
    n_jobs : int, default=None
        Torch threads for ``fit`` and prediction. None: torch's setting (one per core),
        but no more than the cores that other processes leave free (by the load
        average), and one thread to predict up to 64 samples; -1: every core. Set it
        inside a parallel ``GridSearchCV``, or to pin a count.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling and dropout. On CPU, a fixed value with a fixed
        ``n_jobs`` makes ``fit`` deterministic (another thread count rounds differently,
        and ``n_jobs=None`` follows the free cores).
    verbose : int, default=0
        Show a progress bar over epochs with the running loss.
    optimizer, momentum, weight_decay, warmup_epochs, warmup_lr, dropout : deprecated
        Set by ``recipe`` since 0.2; passing one overrides the recipe's value with a
        FutureWarning. They will be removed in 0.3.
    precision : deprecated
        Renamed ``train_precision`` in 0.2 (the embedder's ``precision`` is another
        setting); it will be removed in 0.3.

    Attributes
    ----------
    classes_, class_counts_, base_classes_, new_classes_ : ndarray
        The sorted labels (the columns of ``predict_proba`` follow them), the training
        images of each (0 for a new class), and the labels with and without images.
    class_names_ : ndarray of str or None
        Names used for prompts, aligned with ``classes_``.
    text_features_ : ndarray of shape (n_classes, n_features) or None
        Text features used, aligned with ``classes_``.
    head_ : torch.nn.Module
        The trained head, on CPU (class order: base classes, then new classes).
    head_order_ : ndarray of shape (n_classes,)
        ``classes_[head_order_]`` is the head's class order.
    feature_scale_ : float
        Median norm of the training features; inputs are divided by it (the head is
        invariant to a global scale, this keeps huge or tiny inputs in float range).
    new_class_bias_ : float
        Bias added to the scores of ``new_classes_`` at prediction.
    zero_shot_weight_ : float
        Weight of zero-shot CLIP's scores in the calibrated scores.
    temperature_ : float
        Calibrated probabilities are ``softmax(scores / temperature_)``: the temperature
        that minimises the log loss on the held-out classes of ``new_class_bias="auto"``
        (1 without them). It changes probabilities, never predictions.
    calibration_ : dict or None
        With ``new_class_bias="auto"``: how they were chosen. ``"method"`` says which
        way: ``"held-out classes"`` (the refits; with the held-out classes of each draw,
        and per candidate zero-shot weight the bias, the held-out joint HM it was chosen
        by, each draw's best, and the held-out joint HM at that bias), ``"few images per
        class"`` (zero-shot CLIP without refits; with ``"median_images"``) or
        ``"zero-shot rate"`` (nothing to hold back). None otherwise (a fixed bias, no new
        classes or no text).
    history_ : list of float
        Mean training loss per epoch.
    lr_ : float
        Peak learning rate used (``lr``, or its ``"auto"`` value).
    n_iter_ : int
        Optimizer steps taken.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string feature names.

    Examples
    --------
    >>> from candle_sklearn import CandleClassifier
    >>> from candle_sklearn.datasets import make_clip_like_features
    >>> data = make_clip_like_features(n_base=6, n_new=2, dim=64, random_state=0)
    >>> clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
    ...                        max_epochs=5, random_state=0)
    >>> clf.fit(data.X_train, data.y_train).predict(data.X_test[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        **TextClassifier._parameter_constraints,
        "tau": [Interval(Real, 0, None, closed="left")],
        "recipe": [StrOptions(set(RECIPES))],
        "lr": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "max_steps": [Interval(Integral, 1, None, closed="left"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "visual_scale": [Interval(Real, 0, None, closed="neither")],
        "visual_weight": [Interval(Real, 0, None, closed="left")],
        "attenuation_correction": ["boolean"],
        "context": [StrOptions({"auto", *CONTEXTS})],
        "virtual_init": [StrOptions({"text", "visual"})],
        "tied_text": ["boolean"],
        "num_heads": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "train_precision": [StrOptions(set(PRECISIONS))],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        # deprecated (see the docstring): "deprecated" is the unset value
        "optimizer": [StrOptions({"adamw", "adam", "sgd"}), Hidden(StrOptions({"deprecated"}))],
        "momentum": [Interval(Real, 0, 1, closed="left"), Hidden(StrOptions({"deprecated"}))],
        "weight_decay": [Interval(Real, 0, None, closed="left"),
                         Hidden(StrOptions({"deprecated"}))],
        "warmup_epochs": [Interval(Integral, 0, None, closed="left"),
                          Hidden(StrOptions({"deprecated"}))],
        "warmup_lr": [Interval(Real, 0, None, closed="left"), Hidden(StrOptions({"deprecated"}))],
        "dropout": [Interval(Real, 0, 1, closed="left"), Hidden(StrOptions({"deprecated"}))],
        "precision": [StrOptions(set(PRECISIONS)), Hidden(StrOptions({"deprecated"}))],
    }

    def __init__(self, *, classes=None, class_names=None, text_features=None, encoder=None,
                 templates=None, tau=1.0, recipe="default", lr="auto", max_steps=200,
                 max_epochs=20, batch_size=128, visual_scale=1.0, visual_weight=0.5,
                 attenuation_correction=True, context="auto", new_class_bias="auto",
                 zero_shot_weight="auto", calibration_repeats=3, virtual_init="text",
                 tied_text=False, num_heads=8, device="auto", train_precision="auto",
                 n_jobs=None, random_state=None, verbose=0, optimizer="deprecated",
                 momentum="deprecated", weight_decay="deprecated", warmup_epochs="deprecated",
                 warmup_lr="deprecated", dropout="deprecated", precision="deprecated"):
        store_init_arguments(self, locals())

    def __setstate__(self, state):
        # pickled before these parameters existed: it predicts as these values do
        state.setdefault("visual_weight", 1.0)
        state.setdefault("attenuation_correction", False)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # LayerNorm over the feature axis (Candle's fusion) collapses inputs with very
        # few features (2-D blobs become two points), so the 0.83 accuracy bar of the
        # common checks does not apply; the estimator targets embeddings (D >= 64).
        tags.classifier_tags.poor_score = True
        # CUDA kernels (attention, atomics in backward) are not bitwise reproducible.
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags

    # ----------------------------------------------------------------- fit
    def _fit_threads(self):
        return torch_threads(working_n_jobs(self.n_jobs))

    def _check_method_input(self, X):
        if X.shape[1] < 2:
            raise ValueError(f"CandleClassifier needs at least 2 features, got {X.shape[1]} "
                             "feature(s): its attention layer-normalises each feature "
                             "vector, which leaves nothing of a single feature")
        resolve_device(self.device)

    def _fit_method(self, X, y_idx, counts, text, seed):
        device = resolve_device(self.device)
        is_new = counts == 0
        order = _head_order(is_new)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        scale = _feature_scale(X)
        X_t = torch.as_tensor(_for_head(X, scale))
        y_t = torch.as_tensor(rank[y_idx])
        protos = torch.zeros(int((~is_new).sum()), X.shape[1]).index_add_(0, y_t, X_t)
        protos /= torch.as_tensor(counts[order][~is_new[order]], dtype=torch.float32)[:, None]
        text_t = None if text is None else torch.as_tensor(text[order])
        settings = self._settings()
        start = _within_class_whitening(X_t, y_t) if settings["whiten"] else None
        with seeded(seed, device):
            head = CandleHead(protos, text_t, int(is_new.sum()),
                              virtual_init=self.virtual_init, context=settings["context"],
                              num_heads=self.num_heads, dropout=settings["dropout"],
                              visual_scale=self.visual_scale,
                              tied_text=self.tied_text and text_t is not None,
                              projection=start)
            cfg = self._train_config(*X_t.shape, settings)
            self.history_ = self._train(head, X_t, y_t, torch.as_tensor(counts[order]), seed,
                                        device, cfg)
        head.set_inference_visual_scale(self.visual_weight * self.visual_scale)
        if self.attenuation_correction:
            head.set_visual_gain(attenuation_gain(head.visual_prototypes, head.W_v, X_t, y_t))
        self.head_ = head  # on the training device until the calibration has scored
        self.head_order_ = order
        self.feature_scale_ = scale
        self.lr_ = cfg.lr
        self.n_iter_ = cfg.total_steps(len(X_t))

    def _fit(self, X, y):
        super()._fit(X, y)
        self.head_ = self.head_.cpu()
        return self

    def _refit_params(self):
        # the refits train at the fit's learning rate, so that they behave as the model,
        # and quietly (the calibration's own bar shows them)
        return {"lr": self.lr_, "verbose": 0}

    def add_classes(self, classes, class_names=None, text_features=None):
        """Add classes known only by name to a fitted model, without retraining.

        Their virtual prototypes start from their text features, exactly as new
        classes do at ``fit``; they go through the fitted projections and attention,
        and ``new_class_bias_`` applies to them. Unlike classes named before ``fit``,
        their prototypes were never trained and did not compete with the others in
        the loss (see docs/guide.md for the measured difference). A model fitted
        without new classes has no calibrated bias for them (``new_class_bias_`` is 0,
        so they are rarely predicted): it warns.

        The head uses a text row's direction only, so each added row is first scaled by
        a power of two (exactly) to within a factor of 1.4 of the norm of the fitted
        classes' text rows: a row given at the fitted scale enters unchanged, and one
        of any other magnitude (1e30 or 1e-30 times, say) is treated as the same row at
        the fitted scale, where the head's float32 arithmetic was fitted, rather than
        overflowing it. ``text_features_`` holds the rows as scaled.

        Parameters
        ----------
        classes : array-like of shape (n_added,)
            New labels, none already in ``classes_``.
        class_names : array-like of str, default=None
            Prompt names (default: the labels, when they are strings); used with the
            ``encoder`` when ``text_features`` is None.
        text_features : array-like of shape (n_added, n_features), default=None

        Returns
        -------
        self : CandleClassifier
        """
        check_is_fitted(self)
        added = self._as_labels_of_this_model(as_1d("classes", classes))
        if len(added) == 0:
            return self
        if dup := duplicates(added):
            raise ValueError(f"classes contains duplicates: {dup}")
        if present := np.intersect1d(added, self.classes_).tolist():
            raise ValueError(f"classes already present in classes_: {present}")
        if self.text_features_ is None:
            raise ValueError("the model was fitted without text, so it cannot take classes "
                             "known only by name; refit with text features")
        given = text_features is not None
        adder = self._variant(classes=added, class_names=class_names,
                              text_features=self._at_text_scale(text_features) if given
                              else None)
        names = adder._names(added)
        text = adder._text(added, names, self.n_features_in_)
        if text is None:
            raise ValueError("add_classes needs text for the added classes: pass "
                             "text_features=..., or give the model an encoder (and "
                             "class_names, or string labels)")
        if not given:  # the encoder's rows
            text = self._at_text_scale(text).astype(np.float32)
        if self.class_names_ is not None:  # unnamed added classes go by their labels
            names = added.astype(str) if names is None else names
            if clash := np.intersect1d(names, self.class_names_).tolist():
                raise ValueError(f"class_names already in use: {clash}")
        if (self.new_class_bias == "auto" and self.calibration_ is None
                and self.new_class_bias_ == 0):  # nobody calibrated or set it
            warnings.warn(
                "this model was fitted without new classes, so new_class_bias='auto' had "
                f"nothing to calibrate (new_class_bias_={self.new_class_bias_:g}): the added "
                "classes compete with the trained base classes without a bias and are "
                "rarely predicted. Name them in `classes` before fit (the calibration then "
                "sets the bias), or set new_class_bias_ (metrics.best_new_class_bias finds "
                "one from a few labelled images).", UserWarning, stacklevel=2)
        self.head_.add_new_classes(torch.as_tensor(text))
        self._append_in_head_order(added, names, text)
        return self

    def _at_text_scale(self, text_features):
        """Added text rows as float64 numbers (or an error that says they are not), each
        row scaled by a power of two to within a factor of 1.4 of the median norm of
        ``text_features_`` (see :meth:`add_classes`); rows of zeros as given."""
        text = np.asarray(text_features)
        try:
            if text.dtype.kind not in "biufO" or (text.dtype.kind == "O" and not all(
                    isinstance(v, Real) for v in text.flat)):
                raise TypeError(f"dtype {text.dtype}")
            text = text.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"text_features must be numbers (n_added, n_features), got "
                             f"{type(text_features).__name__} ({exc})") from None
        if not text.ndim or not text.size:
            return text
        # rows of any shape and with NaN are scaled too (by their finite values), so that
        # _text's errors say what is wrong rather than float32 overflowing first
        finite = np.where(np.isfinite(text), text, 0.0)
        peak = np.abs(finite).max(axis=-1, keepdims=True)
        usable = peak > 0
        unit = np.where(usable, peak, 1.0)
        norm = unit * np.linalg.norm(finite / unit, axis=-1, keepdims=True)
        fitted = np.linalg.norm(self.text_features_.astype(np.float64), axis=1)
        shift = np.round(np.log2(np.median(fitted) / np.where(usable, norm, 1.0)))
        return np.ldexp(text, np.where(usable, shift, 0).astype(int))

    def _as_labels_of_this_model(self, added):
        """``added`` in the type of ``classes_``, or an error: labels never change kind."""
        if is_text(added) != is_text(self.classes_) and len(added):
            raise ValueError(f"added labels ({added.dtype}) must be of the same kind as "
                             f"classes_ ({self.classes_.dtype})")
        if is_text(self.classes_):  # str stays str, object stays object
            return added.astype(self.classes_.dtype.kind)
        if self.classes_.dtype.kind == "O":
            return added
        numbers = np.array(added.tolist()) if added.dtype.kind == "O" else added
        is_bool = self.classes_.dtype.kind == "b"
        if len(added) and (numbers.ndim != 1 or numbers.dtype.kind not in "biuf"
                           or (numbers.dtype.kind == "b") != is_bool):
            raise ValueError(f"added labels {added.tolist()[:5]} must be "
                             f"{'booleans' if is_bool else 'numbers'}, as classes_ "
                             f"({self.classes_.dtype}) are")
        if numbers.dtype.kind == "f" and not np.isfinite(numbers).all():
            raise ValueError(f"added labels must be finite numbers, got {added.tolist()[:5]}")
        with np.errstate(invalid="ignore"):
            cast = numbers.astype(self.classes_.dtype)
        if not np.array_equal(cast, numbers):
            raise ValueError(f"added labels {added.tolist()} cannot be represented as "
                             f"{self.classes_.dtype}, the type of classes_")
        return cast

    def _settings(self):
        """The recipe's training settings and the training precision, with the deprecated
        parameters that were set (each with a FutureWarning) in their place."""
        settings = dict(RECIPES[self.recipe])
        for name in _DEPRECATED:
            if (value := getattr(self, name)) != "deprecated":
                warnings.warn(f"CandleClassifier's {name} is deprecated since 0.2 and will be "
                              f"removed in 0.3: recipe= sets it", FutureWarning, stacklevel=4)
                settings[name] = value
        settings["precision"] = self.train_precision
        if self.precision != "deprecated":
            warnings.warn("CandleClassifier's precision was renamed train_precision in 0.2; "
                          "precision will be removed in 0.3", FutureWarning, stacklevel=4)
            settings["precision"] = self.precision
        if self.context != "auto":
            settings["context"] = self.context
        return settings

    def _train_config(self, n_samples, n_features, settings):
        if self.lr != "auto":
            lr = float(self.lr)
        else:
            lr = settings["lr"] or auto_lr(n_samples, n_features)
        return TrainConfig(tau=self.tau, optimizer=settings["optimizer"], lr=lr,
                           weight_decay=settings["weight_decay"],
                           momentum=settings["momentum"], max_steps=self.max_steps,
                           max_epochs=self.max_epochs, batch_size=self.batch_size,
                           warmup_epochs=settings["warmup_epochs"],
                           warmup_lr=settings["warmup_lr"], precision=settings["precision"])

    def _train(self, head, X, y, counts, seed, device, cfg):
        passes = -(-cfg.total_steps(len(X)) // cfg.steps_per_epoch(len(X)))
        with tqdm(total=passes, desc="CandleClassifier.fit", unit="epoch",
                  disable=not self.verbose) as bar:
            def on_epoch(epoch, loss):
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update()
            try:
                return train_head(head, X, y, counts, cfg, seed=seed, device=device,
                                  on_epoch=on_epoch)
            except TrainingDivergedError as exc:
                raise TrainingDivergedError(
                    f"CandleClassifier.fit diverged: {exc}. Lower lr (now {cfg.lr:g}), "
                    f"weight_decay ({cfg.weight_decay:g}) or tau ({self.tau:g}).") from None

    def _append_in_head_order(self, added, names, text):
        """Append classes after the head's last class; keep ``classes_`` sorted."""
        order = self.head_order_

        def extend(values, more):
            return np.concatenate([values[order], more])

        head_classes = extend(self.classes_, added)
        perm = np.argsort(head_classes, kind="stable")
        self.classes_ = head_classes[perm]
        self.class_counts_ = extend(self.class_counts_, np.zeros(len(added), int))[perm]
        self.text_features_ = extend(self.text_features_, text)[perm]
        if self.class_names_ is not None:
            self.class_names_ = extend(self.class_names_, names)[perm]
        self.new_classes_ = self.classes_[self.class_counts_ == 0]
        self.head_order_ = np.argsort(perm)

    # ------------------------------------------------------------- predict
    def _blended_scores(self, X, weight):
        """The head's scores blended with zero-shot CLIP's (in float32, inside the
        scorer), in ``classes_`` order, float64."""
        device = resolve_device(self.device)
        with torch_threads(serving_n_jobs(self.n_jobs, len(X))):
            scorer = scorer_for(self.head_, device)
            return _in_class_order(scorer(_for_head(X, self.feature_scale_), weight),
                                   self.head_order_)

    def _method_scores(self, X):
        return self._blended_scores(X, 0.0)
