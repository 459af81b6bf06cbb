"""Constructor arguments stored as scikit-learn's estimator contract wants them."""


def store_init_arguments(estimator, arguments):
    """Set every argument of a constructor on ``estimator`` under its own name, unchanged:
    all that a scikit-learn ``__init__`` may do. ``arguments`` is the constructor's
    ``locals()``, taken first thing, so it holds the arguments and nothing else (but
    ``self``, and ``__class__`` where the body names ``super``)."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)
