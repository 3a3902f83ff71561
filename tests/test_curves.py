"""LayerRotationCurves and the scan recorder: values, compilation, references, files, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layca_optax as lo
from layca_optax._tree import leaves_by_path
from layca_optax import _measure
from tests import tolerances
from tests.test_rotation import rotated

ORDER = ["Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"]


def mlp_params(seed=0, sizes=(4, 8, 8, 3)):
  rng = np.random.default_rng(seed)
  return {
      f"Dense_{i}": {
          "kernel": rng.normal(size=(a, b)).astype(np.float32),
          "bias": np.zeros(b, np.float32),
      }
      for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
  }


def perturbed(params, scale, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: x + scale * rng.normal(size=x.shape).astype(np.float32), params
  )


def test_curves_start_at_zero_and_match_cosine_distance():
  init = mlp_params()
  curves = lo.LayerRotationCurves(init)
  curves.record(0, init)
  history = [init]
  for step in (10, 20, 30):
    params = perturbed(init, 0.1 * step / 10, step)
    history.append(params)
    curves.record(step, params)
  assert curves.steps == [0, 10, 20, 30]
  assert curves.paths == ORDER  # kernels only, depth order
  assert list(curves.values) == ORDER
  assert curves.latest().keys() == set(ORDER)
  assert curves.as_array().shape == (4, 3)
  assert all(v == 0.0 for v in curves.as_array()[0])
  for row, params in zip(curves.as_array(), history):
    expected = leaves_by_path(lo.cosine_distance(params, init, mask=lo.default_mask))
    np.testing.assert_allclose(
        row, [float(expected[p]) for p in ORDER], rtol=2 * tolerances.distance_rtol()
    )
    assert all(isinstance(v, float) for v in curves.latest().values())


def test_layer_order_sets_the_curve_order():
  init = mlp_params()
  order = ["Dense_2/bias", "Dense_2/kernel", "Dense_0/kernel", "Dense_1/kernel"]
  curves = lo.LayerRotationCurves(init, layer_order=order)
  assert curves.paths == ["Dense_2/kernel", "Dense_0/kernel", "Dense_1/kernel"]
  # Natural order by default: Dense_10 after Dense_2.
  params = {f"Dense_{i}": {"kernel": np.ones((2, 2), np.float32)} for i in (10, 2, 1)}
  assert lo.LayerRotationCurves(params).paths == [
      "Dense_1/kernel", "Dense_2/kernel", "Dense_10/kernel"
  ]


def test_record_is_one_jitted_call_that_does_not_retrace(monkeypatch):
  traces = []
  original = _measure.cosine_distance

  def counting(*args, **kwargs):
    traces.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(_measure, "cosine_distance", counting)
  init = mlp_params()
  curves = lo.LayerRotationCurves(init)
  for step in range(5):
    curves.record(step, perturbed(init, 0.1, step))
  assert len(traces) == 1
  # Device arrays and NumPy arrays of the same shapes share the compiled function.
  curves.record(5, jax.tree.map(jnp.asarray, init))
  assert len(traces) == 1


def test_reference_is_a_copy_unaffected_by_donation():
  values = mlp_params()
  init = jax.tree.map(jnp.asarray, values)
  curves = lo.LayerRotationCurves(init)
  # The caller's buffers are donated to (and overwritten by) an update.
  jax.jit(lambda p: jax.tree.map(lambda x: 2.0 * x + 1.0, p), donate_argnums=0)(init)
  curves.record(1, values)
  assert all(v == 0.0 for v in curves.latest().values())


def test_flax_nnx_state():
  nnx = pytest.importorskip("flax.nnx")

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.stem = nnx.Linear(3, 4, rngs=rngs)
      self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
      return self.head(nnx.relu(self.stem(x)))

  model = Net(nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  order = lo.forward_order(model, state, jnp.ones((1, 3)))
  curves = lo.LayerRotationCurves(state, layer_order=order)
  assert curves.paths == ["stem/kernel", "head/kernel"]
  curves.record(0, nnx.state(model, nnx.Param))
  model.stem.kernel[...] = model.stem.kernel[...] + 1.0
  curves.record(1, nnx.state(model, nnx.Param))
  assert curves.values["stem/kernel"][1] > 0.0 and curves.values["head/kernel"][1] == 0.0


def test_rotation_axes_give_one_curve_per_stacked_block():
  rng = np.random.default_rng(0)
  separate = {k: rng.normal(size=(8, 8)).astype(np.float32) for k in ("a", "s0", "s1", "s2", "z")}
  stack = lambda t: {"a": t["a"], "stack": np.stack([t[f"s{i}"] for i in range(3)]), "z": t["z"]}
  later = perturbed(separate, 0.3, 1)
  sep = lo.LayerRotationCurves(separate, layer_order=["a", "s0", "s1", "s2", "z"])
  stk = lo.LayerRotationCurves(
      stack(separate), layer_order=["a", "stack", "z"],
      rotation_axes={"a": None, "stack": (1, 2), "z": None},
  )
  for curves, params in ((sep, separate), (stk, stack(separate))):
    curves.record(0, params)
  sep.record(1, later)
  stk.record(1, stack(later))
  assert stk.paths == ["a", "stack[0]", "stack[1]", "stack[2]", "z"]
  # Two programs computing the same distances, each within its bound.
  np.testing.assert_allclose(stk.as_array(), sep.as_array(), rtol=2 * tolerances.distance_rtol(64))
  assert lo.LayerRotationCurves(
      {"w": np.ones((2, 3, 4), np.float32)}, rotation_axes=lambda p: {"w": (2,)}
  ).paths == ["w[0,0]", "w[0,1]", "w[0,2]", "w[1,0]", "w[1,1]", "w[1,2]"]


def test_json_round_trip(tmp_path):
  init = mlp_params()
  curves = lo.LayerRotationCurves(init)
  curves.record(0, init)
  curves.record(7, perturbed(init, 0.2, 0))
  curves.save(tmp_path / "curves.json")
  assert json.loads((tmp_path / "curves.json").read_text())["paths"] == ORDER
  loaded = lo.LayerRotationCurves.load(tmp_path / "curves.json")
  assert loaded.steps == curves.steps
  assert loaded.values == curves.values  # floats survive JSON exactly
  assert loaded.paths == curves.paths
  np.testing.assert_array_equal(loaded.as_array(), curves.as_array())
  with pytest.raises(RuntimeError, match=r"made by LayerRotationCurves.load\(\).*cannot record"):
    loaded.record(8, init)


def test_scan_recorder_equals_host_recording():
  init = mlp_params()
  num_steps = 6
  deltas = jnp.stack([jnp.full((), 0.05 * (t + 1)) for t in range(num_steps)])

  def advance(params, delta):
    return jax.tree.map(lambda x: x + delta * jnp.sin(jnp.arange(x.size).reshape(x.shape)), params)

  @jax.jit
  def run(params, buffer):
    def body(carry, delta):
      params, buffer = carry
      params = advance(params, delta)
      return (params, lo.record_curve(buffer, params, init)), None

    return jax.lax.scan(body, (params, buffer), deltas)[0]

  buffer = lo.init_curve_buffer(init, num_records=num_steps)
  _, buffer = run(init, buffer)
  assert int(buffer.count) == num_steps
  from_scan = lo.LayerRotationCurves(init)
  from_scan.extend(range(1, num_steps + 1), buffer)

  on_host = lo.LayerRotationCurves(init)
  params = init
  for t in range(num_steps):
    params = advance(params, deltas[t])
    on_host.record(t + 1, params)
  assert from_scan.steps == on_host.steps
  # Two programs computing the same distances, each within its bound.
  np.testing.assert_allclose(from_scan.as_array(), on_host.as_array(),
                             rtol=2 * tolerances.distance_rtol())


def test_scan_recorder_drops_records_past_the_end():
  init = {"w": np.eye(2, dtype=np.float32)}
  buffer = lo.init_curve_buffer(init, 2)
  for _ in range(3):
    buffer = jax.jit(lo.record_curve)(buffer, init, init)
  assert int(buffer.count) == 3 and buffer.values.shape == (2, 1)
  curves = lo.LayerRotationCurves(init)
  with pytest.raises(ValueError, match="holds 2 records \\(1 records past its end were dropped"):
    curves.extend([0, 1, 2], buffer)
  curves.extend([0, 1], buffer)
  assert curves.steps == [0, 1]


def test_extend_rejects_a_buffer_for_other_curves():
  init = mlp_params()
  buffer = lo.init_curve_buffer(init, 2, mask=lambda p: jax.tree.map(lambda x: True, p))
  with pytest.raises(ValueError, match="same params, mask, rotation_axes and layer_order"):
    lo.LayerRotationCurves(init).extend([0, 1], buffer)


@pytest.mark.parametrize(
    "shape", [(64, 10), (3, 3, 64, 64), (512, 512)], ids=["small", "conv", "dense"]
)
def test_host_and_low_precision_references_within_documented_error(shape):
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=shape)
  init = {"w": w0.astype(np.float32)}
  recorders = {
      "device": lo.LayerRotationCurves(init),
      "host": lo.LayerRotationCurves(init, reference="host"),
      "bfloat16": lo.LayerRotationCurves(init, reference_dtype=jnp.bfloat16),
      "float16": lo.LayerRotationCurves(init, reference_dtype=jnp.float16),
  }
  angles = [0.0, 1e-3, 1e-2, 0.1, 0.5, 1.5]
  exact = np.array([1 - np.cos(a) for a in angles])
  for step, angle in enumerate(angles):
    params = {"w": (rotated(w0, angle, rng) if angle else w0).astype(np.float32)}
    for curves in recorders.values():
      curves.record(step, params)
  got = {name: np.array(c.values["w"]) for name, c in recorders.items()}
  assert got["device"][0] == got["host"][0] == 0.0
  # The distance's bound plus the float32 rounding of the params (as a Layca step's).
  rtol = 2 * tolerances.applied_angle_rtol(angles[1], w0.size)
  np.testing.assert_allclose(got["device"][1:], exact[1:], rtol=rtol)
  np.testing.assert_allclose(got["host"][1:], exact[1:], rtol=rtol)
  # Documented: floor ~1.4e-6, then ~1.7e-3 sin(angle) / sqrt(n) (one standard deviation).
  bf16_error = np.abs(got["bfloat16"] - exact)
  assert 5e-7 < bf16_error[0] < 3e-6
  bound = 2e-6 + 4 * 1.7e-3 * np.sin(angles) / np.sqrt(np.prod(shape))
  np.testing.assert_array_less(bf16_error, bound)
  assert np.abs(got["float16"] - exact).max() < 1e-5
  assert recorders["bfloat16"]._reference[0].dtype == jnp.bfloat16


def test_host_reference_lives_in_numpy():
  curves = lo.LayerRotationCurves(jax.tree.map(jnp.asarray, mlp_params()), reference="host")
  assert all(type(x) is np.ndarray for x in curves._reference)


def test_errors_say_what_was_wrong_and_show_the_fix():
  init = mlp_params()
  curves = lo.LayerRotationCurves(init)
  other = dict(init)
  other["Dense_9"] = other.pop("Dense_2")
  with pytest.raises(ValueError, match="record: the params and the initial params have different"):
    curves.record(1, other)
  with pytest.raises(ValueError, match=r"'Dense_0/kernel' of the params has shape \(2, 8\)"):
    curves.record(1, {**init, "Dense_0": {"kernel": np.ones((2, 8)), "bias": np.zeros(8)}})
  with pytest.raises(ValueError, match=r"rotation axes \(5,\) do not fit leaf 'Dense_0/bias' of shape \(8,\)"):
    lo.LayerRotationCurves(init, rotation_axes=lambda p: jax.tree.map(lambda x: (5,), p))
  with pytest.raises(ValueError, match="`rotation_axes` must be a pytree"):
    lo.LayerRotationCurves(init, rotation_axes={"nope": (0,)})
  with pytest.raises(ValueError, match="reference must be 'device'"):
    lo.LayerRotationCurves(init, reference="gpu")
  with pytest.raises(ValueError, match="nothing to record.*mask="):
    lo.LayerRotationCurves({"b": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="not a leaf path.*Did you mean"):
    lo.LayerRotationCurves(init, layer_order=["Dense_0/kernal"])
  with pytest.raises(ValueError, match="nothing recorded yet"):
    curves.latest()
  with pytest.raises(ValueError, match="one value per step"):
    lo.LayerRotationCurves.from_values([0, 1], {"a": [0.0]})


def test_load_rejects_other_json(tmp_path):
  (tmp_path / "x.json").write_text(json.dumps({"steps": []}))
  with pytest.raises(ValueError, match="not a file written by LayerRotationCurves.save"):
    lo.LayerRotationCurves.load(tmp_path / "x.json")
