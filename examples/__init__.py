"""Examples for layca_optax: shared data, models, training loop and plots, plus scripts.

Run a script from the repository root, e.g. ``python -m examples.mnist``. The examples
need the ``examples`` extra: ``pip install "layca_optax[examples]"``.
"""
