"""rotation_scalars: flat {name: float} dicts for TensorBoard, W&B and CLU."""


import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax as lo

INIT = {
    "Dense_0": {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.zeros(2)},
    "blocks": {"kernel": jnp.ones((2, 2, 2))},
}
PARAMS = {
    "Dense_0": {"kernel": jnp.array([[0.0, 1.0]]), "bias": jnp.ones(2)},
    "blocks": {"kernel": jnp.ones((2, 2, 2)).at[1, 0, 0].set(-1.0)},
}


def test_scalars_from_a_pytree_skip_none_and_expand_arrays():
  distances = lo.cosine_distance(
      PARAMS, INIT, mask=lo.default_mask,
      rotation_axes=lambda p: {"Dense_0": None, "blocks": lo.stacked_layer_axes(p["blocks"])},
  )
  scalars = lo.rotation_scalars(distances)
  assert list(scalars) == [
      "layer_rotation/Dense_0/kernel",
      "layer_rotation/blocks/kernel[0]",
      "layer_rotation/blocks/kernel[1]",
  ]
  assert scalars["layer_rotation/Dense_0/kernel"] == 1.0
  assert scalars["layer_rotation/blocks/kernel[0]"] == 0.0
  assert scalars["layer_rotation/blocks/kernel[1]"] == pytest.approx(0.5)
  assert all(type(v) is float for v in scalars.values())
  assert lo.rotation_scalars({"a/b": np.float32(0.25)}, prefix=None) == {"a/b": 0.25}
  assert lo.rotation_scalars({"a": np.zeros((1, 2))}, prefix="rot") == {
      "rot/a[0,0]": 0.0, "rot/a[0,1]": 0.0
  }


def test_scalars_from_curves_are_the_latest_values():
  curves = lo.LayerRotationCurves(INIT)
  curves.record(0, INIT)
  curves.record(1, PARAMS)
  scalars = lo.rotation_scalars(curves, prefix="rotation")
  assert scalars == {
      "rotation/Dense_0/kernel": 1.0,
      "rotation/blocks/kernel": curves.values["blocks/kernel"][-1],
  }


def test_tensorboardx_writes_an_event_file(tmp_path):
  tensorboardX = pytest.importorskip("tensorboardX")
  curves = lo.LayerRotationCurves(INIT)
  with tensorboardX.SummaryWriter(str(tmp_path)) as writer:
    for step, params in ((0, INIT), (100, PARAMS)):
      curves.record(step, params)
      for name, value in lo.rotation_scalars(curves).items():
        writer.add_scalar(name, value, global_step=step)
  events = list(tmp_path.glob("events.out.tfevents.*"))
  assert len(events) == 1 and events[0].stat().st_size > 0
  assert b"layer_rotation/Dense_0/kernel" in events[0].read_bytes()


def test_bad_input_says_what_to_pass():
  with pytest.raises(TypeError, match="not a number or an array.*cosine_distance"):
    lo.rotation_scalars({"a": "text"})
  with pytest.raises(ValueError, match="nothing recorded yet"):
    lo.rotation_scalars(lo.LayerRotationCurves(INIT))
