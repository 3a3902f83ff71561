"""Benchmarks of layca_optax: the tree builders (``trees``) and the harness (``run``)."""
