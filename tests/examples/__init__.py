"""Tests of the examples; the tiny command-line settings their end-to-end runs share."""

#: A few random images, small batches, no progress bar.
TINY_DATA = ["--data", "synthetic", "--batch-size", "16", "--no-progress"]
#: The smallest CNN of the experiments: two stages of one convolution.
TINY_CNN = ["--stages", "4,8", "--convs-per-stage", "1"]
#: One epoch of the tiny CNN on the tiny data.
TINY_RUN = [*TINY_DATA, "--epochs", "1", *TINY_CNN]
PNG = b"\x89PNG"
