"""A small decoder-only byte-level transformer in Flax NNX, its blocks stacked in one leaf each.

:class:`TransformerLM` is the GPT design at CPU size: token and position embeddings, ``N``
pre-LayerNorm blocks (causal multi-head self-attention, then a GELU MLP, each added to the
residual stream), a final LayerNorm and an output head over the 256 byte values. The
blocks are built with ``nnx.vmap`` and run with ``nnx.scan``, so every block parameter is
one leaf with a leading ``blocks`` axis: the query kernel of all blocks is
``blocks/q/kernel`` of shape ``(blocks, d, d)``.

What is a layer (Layca's mask, :func:`layer_mask`), and why:

* **Layers**: every kernel that multiplies an input: per block ``q``, ``k``, ``v``,
  ``out`` (attention) and ``mlp_in``, ``mlp_out``; the ``head``; and the two embedding
  tables ``tok`` and ``pos``, which are Dense kernels applied to one-hot bytes and
  one-hot positions. With :func:`per_block_axes` (``layca_optax.stacked_layer_axes`` on
  ``blocks``) each block's slice of a stacked kernel is its own layer, with its own norm
  and rotation: ``6 * blocks + 3`` layers.
* **Not layers**: the LayerNorm scales and biases (per block ``ln1``, ``ln2``, and the
  final ``ln``). They are vectors added or multiplied elementwise, not kernels; and they
  are the only parameters left that can change a scale once Layca fixes every kernel's
  norm: the softmax of attention and of the output is *not* invariant to the norms of
  ``q``, ``k`` and ``head``, so the LayerNorm scales set those temperatures. Layca steps
  them with its base optimizer's step times the rate (``-rho(t) s``), not frozen.
* The dense layers have no biases (as in the paper's networks, and PaLM/LLaMA).

Beware the default mask here: ``layca_optax.default_mask`` calls a leaf a layer when
``ndim >= 2``, and stacking gives the LayerNorm scales the shape ``(blocks, d)``: they
would count as layers. :func:`layer_mask` selects by name (``kernel``, ``embedding``).

Initialisation: kernels LeCun-normal (``std = 1 / sqrt(fan_in)``, Flax's default), the two
projections into the residual stream (``out``, ``mlp_out``) further scaled by
``1 / sqrt(2 * blocks)`` (GPT-2), embeddings normal with std 1 (each row about as large as
the residual stream it starts), LayerNorm scale 1 and bias 0. Layca keeps every layer on
the sphere of its initial norm, so these norms stay what they are at step 0.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import layca_optax

VOCAB_SIZE = 256  # bytes
#: The stacked kernels of a block, in forward order.
BLOCK_KERNELS = ("q", "k", "v", "out", "mlp_in", "mlp_out")
#: Path endings of the leaves that are layers (see the module docstring).
LAYER_NAMES = ("kernel", "embedding")


class Block(nnx.Module):
  """One pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

  def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, num_blocks: int,
               *, rngs: nnx.Rngs):
    if d_model % num_heads:
      raise ValueError(
          f"d_model={d_model} must be a multiple of num_heads={num_heads}, e.g. "
          f"num_heads={math.gcd(d_model, num_heads)}."
      )
    self.num_heads = num_heads
    residual = nnx.initializers.variance_scaling(
        1.0 / (2 * num_blocks), "fan_in", "truncated_normal"
    )

    lecun = nnx.initializers.lecun_normal()

    def dense(d_in, d_out, init=lecun):
      return nnx.Linear(d_in, d_out, use_bias=False, kernel_init=init, rngs=rngs)

    self.ln1 = nnx.LayerNorm(d_model, rngs=rngs)
    self.q, self.k, self.v = (dense(d_model, d_model) for _ in range(3))
    self.out = dense(d_model, d_model, residual)
    self.ln2 = nnx.LayerNorm(d_model, rngs=rngs)
    self.mlp_in = dense(d_model, mlp_ratio * d_model)
    self.mlp_out = dense(mlp_ratio * d_model, d_model, residual)

  def attention(self, h: jax.Array) -> jax.Array:
    """Causal multi-head self-attention of ``h`` ``(batch, time, d)``, before ``out``."""
    batch, time, d = h.shape
    heads = lambda t: t.reshape(batch, time, self.num_heads, d // self.num_heads)
    q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // self.num_heads)
    causal = jnp.tril(jnp.ones((time, time), bool))[None, None]
    logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, time, d)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.out(self.attention(self.ln1(x)))
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.ln2(x))))


class TransformerLM(nnx.Module):
  """Decoder-only byte-level language model; ``model(tokens) -> logits (batch, time, 256)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from examples.transformer_model import TransformerLM
    >>> model = TransformerLM(d_model=16, num_heads=2, num_blocks=3, max_len=8,
    ...                       rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 8), jnp.int32)).shape
    (2, 8, 256)
    >>> model.blocks.q.kernel.shape  # (blocks, d_in, d_out): one leaf
    (3, 16, 16)
  """

  def __init__(self, *, d_model: int = 64, num_heads: int = 4, num_blocks: int = 4,
               mlp_ratio: int = 4, max_len: int = 64, rngs: nnx.Rngs):
    if num_blocks < 1:
      raise ValueError(f"num_blocks must be at least 1, got {num_blocks}.")
    embed_init = nnx.initializers.normal(1.0)
    self.max_len = max_len
    self.tok = nnx.Embed(VOCAB_SIZE, d_model, embedding_init=embed_init, rngs=rngs)
    self.pos = nnx.Embed(max_len, d_model, embedding_init=embed_init, rngs=rngs)

    @nnx.split_rngs(splits=num_blocks)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_blocks(rngs):
      return Block(d_model, num_heads, mlp_ratio, num_blocks, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.ln = nnx.LayerNorm(d_model, rngs=rngs)
    self.head = nnx.Linear(d_model, VOCAB_SIZE, use_bias=False, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    time = tokens.shape[1]
    if time > self.max_len:
      raise ValueError(
          f"sequences of {time} bytes are longer than max_len={self.max_len}: build the "
          f"model with max_len >= {time}."
      )
    x = self.tok(tokens) + self.pos(jnp.arange(time))[None]

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def through_blocks(x, block):
      return block(x)

    return self.head(self.ln(through_blocks(x, self.blocks)))


# ---------------------------------------------------------------------------------------
# The model as a pure function of a nested dict of arrays (what the optimizers see).


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """``(graphdef, params)``: the model's structure and its parameters as a plain nested dict.

  The examples' optimizers run on this dict, so that masks and rotation axes are plain
  dicts too (``nnx.to_pure_dict``; the model has no state besides its ``nnx.Param``).
  """
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


def apply_fn(graphdef: nnx.GraphDef):
  """``f(params, tokens) -> logits`` for the params dict of :func:`split_params`."""
  def apply(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, nnx.State(params))(tokens)

  return apply


def layer_mask(params: dict[str, Any]) -> dict[str, Any]:
  """``True`` for the layers (kernels and embeddings), ``False`` for the LayerNorm leaves."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in LAYER_NAMES, params
  )


def per_block_axes(params: dict[str, Any]) -> dict[str, Any]:
  """Rotation axes: each block's slice of a stacked leaf is one vector; others whole.

  ``blocks/q/kernel`` ``(blocks, d, d)`` gets ``(1, 2)`` (``stacked_layer_axes``), every
  leaf outside ``blocks`` ``None`` (the whole leaf).
  """
  return {
      name: layca_optax.stacked_layer_axes(sub) if name == "blocks" else None
      for name, sub in params.items()
  }


def per_neuron_axes(params: dict[str, Any]) -> dict[str, Any]:
  """Rotation axes for per-neuron Layca: one vector per output unit of every layer.

  A stacked kernel ``(blocks, d_in, d_out)`` gets ``(1,)`` (blocks stacked, units kept),
  the head and embeddings ``layca_optax.output_unit_axes`` (every axis but the last).
  """
  def stacked_units(x):
    return (1,) if jnp.ndim(x) >= 2 else (0,)

  return {
      name: jax.tree.map(stacked_units, sub) if name == "blocks"
      else layca_optax.output_unit_axes(sub)
      for name, sub in params.items()
  }


def kernel_kind(curve: str) -> str:
  """``'blocks/q/kernel[2]'`` -> ``'q'``; ``'tok/embedding'`` -> ``'tok'``."""
  parts = curve.split("/")
  return parts[1] if parts[0] == "blocks" else parts[0]


def block_index(curve: str) -> int | None:
  """``'blocks/q/kernel[2]'`` -> ``2``; ``None`` for a leaf outside the blocks."""
  if not curve.startswith("blocks/") or not curve.endswith("]"):
    return None
  return int(curve[curve.rindex("[") + 1 : -1])
