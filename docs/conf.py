"""Sphinx configuration of the layca_optax documentation.

Build (from the repository root, no network needed)::

  python3 -m pip install -e ".[docs]" && python3 -m sphinx -W -b html docs docs/_build/html

Two pages are generated here, before Sphinx reads the sources (both are git-ignored):

* ``api.md``: the API reference, one autosummary entry per name of
  ``layca_optax.__all__`` (grouped by :data:`API_SECTIONS`; a public name that no
  section lists goes to "Other public names", so a new name is never left out);
The notebook pages render ``docs/notebooks/<name>.ipynb``, committed copies of the
repository's notebooks run in full (``python -m notebooks.execute``): they are not run again
here. The Markdown pages with ``{code-cell}`` blocks are executed by myst-nb at every build.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
# This checkout's library, examples and notebooks, for autodoc and for the Jupyter kernels
# that run the pages' code cells (they inherit the environment).
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

import layca_optax

project = "layca_optax"
author = "layca_optax developers"
copyright = "2025-2026, layca_optax developers"
version = release = layca_optax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax copied into _static/: math renders without a network
]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]

# Warnings are errors (-W), and every cross-reference must resolve (nitpicky), except
# those to other projects' objects: no intersphinx, since the build uses no network.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(optax|jax|jnp|np|numpy|flax|nnx|chex|matplotlib|collections|typing|pathlib)\..*"),
    (r"py:.*", r"(Any|Callable|Mapping|Sequence|Iterable|NamedTuple|PyTree|Array|ArrayLike)"),
    (r"py:.*", r"(float|int|str|bool|tuple|list|dict|None|object|type)"),
    (r"py:.*", r"(Axes|Figure|ScalarOrSchedule|Schedule|Params|Updates|OptState|Path)"),
    (r"py:.*", r"(MaskOrFn|AxesOrFn|AxisName|LearningRate|_\w+\..*)"),  # the library's aliases
    (r"py:class", r"TypeAliasForwardRef"),  # how Sphinx wraps autodoc_type_aliases
]

# Autodoc: the public names only, as ``layca_optax.<name>`` (never the private modules).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Show type aliases by name instead of their (long) expansion. The library's own aliases
# live in private modules: show their bare names.
autodoc_type_aliases = {
    name: name.rsplit(".", 1)[-1] if name.startswith("_") else name
    for name in (
        "optax.ScalarOrSchedule", "optax.Schedule", "optax.Params", "optax.Updates",
        "optax.OptState", "chex.ArrayTree", "jax.typing.ArrayLike",
        "_layers.MaskOrFn", "_axes.AxesOrFn", "MaskOrFn", "AxesOrFn", "_rates.LearningRate",
    )
}
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# MyST and notebooks.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "auto"  # the Markdown pages' code cells run at every build
nb_execution_excludepatterns = ["notebooks/*"]  # committed with their outputs
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# Markdown outputs (the paper tour's results tables) rendered with MyST, which has tables
# (the default, CommonMark, has none and shows "| run | ... |" as a paragraph).
nb_render_markdown_format = "myst"
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = f"layca_optax {release}"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "navigation_with_keys": False,
}

# ---------------------------------------------------------------------------------------
# The API page, from ``layca_optax.__all__``.

#: (title, one-line description, names) of the API page's sections, in reading order.
API_SECTIONS = [
    ("The optimizer", ("Layca on top of a base optimizer, and its rotation step as one optax "
     "transform: ``layca(lr, base_optimizer=b)`` is "
     "``optax.chain(b, scale_by_layca(lr))``."),
     ["layca", "scale_by_layca", "ScaleByLaycaState"]),
    ("The composable parts",
     ("The four operations of Algorithm 1 as separate transforms: "
     "``optax.chain(base, project_orthogonal(), normalize_rotation(), "
     "scale_by_layer_rates(lr), project_to_sphere())`` equals "
     "``layca(lr, base_optimizer=base)``."),
     ["project_orthogonal", "normalize_rotation", "scale_by_layer_rates",
      "project_to_sphere", "ScaleByLayerRatesState", "ProjectToSphereState"]),
    ("Rates", "Layer-wise multipliers and per-leaf rates (AdaptCopy).",
     ["alpha_multipliers", "PerLeafRates", "replay_rates"]),
    ("Measuring layer rotation", "Cosine distances, angles and the rotation of every step.",
     ["cosine_distance", "rotation_angle", "measure_rotation", "MeasureRotationState",
      "rotation_rates"]),
    ("Layer rotation curves", ("The paper's figure: each layer's distance to its initial "
     "value over training."),
     ["LayerRotationCurves", "curves_from_checkpoints", "init_curve_buffer", "record_curve",
      "CurveBuffer"]),
    ("Plotting and logging", ("matplotlib figures (``[plot]`` extra) and scalars for "
     "TensorBoard, W&B or CLU."),
     ["plot_layer_rotation_curves", "plot_rotation_rates", "rotation_scalars"]),
    ("Layers, depth order and rotation axes",
     "Which leaves are layers, their forward order, which axes form one vector.",
     ["default_mask", "forward_order", "natural_order", "stacked_layer_axes",
      "output_unit_axes"]),
]


def public_names() -> list[str]:
  """``layca_optax.__all__``: the names the API page documents."""
  return sorted(layca_optax.__all__)


def api_sections() -> list[tuple[str, str, list[str]]]:
  """:data:`API_SECTIONS` restricted to public names, plus one for names none lists."""
  public = set(public_names())
  sections = [(t, d, [n for n in names if n in public]) for t, d, names in API_SECTIONS]
  listed = {name for _, _, names in sections for name in names}
  others = sorted(public - listed)
  if others:
    sections.append(("Other public names", "", others))
  return [section for section in sections if section[2]]


def api_page() -> str:
  """The MyST text of ``api.md``."""
  lines = [
      "# API reference",
      "",
      ("Every public name of `layca_optax` (its `__all__`), with its signature, docstring and "
      "runnable example. Import them from the package: `from layca_optax import layca`."),
      "",
  ]
  for title, description, names in api_sections():
    lines += [f"## {title}", ""]
    if description:
      lines += ["```{eval-rst}", description, "```", ""]
    lines += ["```{eval-rst}", ".. currentmodule:: layca_optax", "",
              ".. autosummary::", "   :toctree: _autosummary", "   :nosignatures:", ""]
    lines += [f"   {name}" for name in names]
    lines += ["```", ""]
  return "\n".join(lines)


def write_if_changed(path: pathlib.Path, text: str) -> None:
  """Writes ``text`` unless the file holds it already (keeps Sphinx's cache valid)."""
  if not path.is_file() or path.read_text() != text:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


write_if_changed(DOCS / "api.md", api_page())

class EmptyGlobFilter(logging.Filter):
  """Drops "toctree glob pattern ... didn't match any documents" for :data:`OPTIONAL_GLOBS`.

  The toctrees name, by glob, pages that other contributions add (``guides/multihost``,
  ``experiments/transformer``...): until they exist the globs match nothing, which is
  fine. Sphinx gives this warning no type, so ``suppress_warnings`` cannot silence it.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (
        "didn't match any documents" in message
        and any(repr(pattern) in message for pattern in OPTIONAL_GLOBS)
    )


OPTIONAL_GLOBS = ("guides/multihost*", "guides/checkpoint_report*", "guides/*", "experiments/*")


def setup(app):
  logging.getLogger("sphinx.sphinx.directives.other").addFilter(EmptyGlobFilter())
