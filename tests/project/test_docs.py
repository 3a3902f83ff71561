"""The documentation builds with the README's command, warnings as errors, and is complete.

One build (the ``built_docs`` fixture) runs the README's Sphinx command with the output in
a temporary directory: ``-W`` turns every warning into an error, including a
cross-reference to the public API that does not resolve (the configuration is
``nitpicky``), and myst-nb stops the build if a code cell of a page raises. The notebook
pages render the committed copies in ``docs/notebooks/`` (run in full by
``python -m notebooks.execute``). Then the built HTML must hold an API entry for every name
of ``layca_optax.__all__``, figures on the notebook pages, rendered math, and no script,
style sheet or image from the network (the site reads right offline).
"""

from __future__ import annotations

import html.parser
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

for module in ("sphinx", "myst_nb", "sphinx_book_theme", "nbclient", "flax", "matplotlib"):
  pytest.importorskip(module)

import layca_optax

pytestmark = pytest.mark.slow  # end-to-end runs: seconds to minutes each

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 900  # seconds; about 2 to 3 minutes on two CPU cores without the notebooks
NOTEBOOK_PAGES = ("notebooks/quickstart.html", "notebooks/paper_tour.html")


def readme_docs_command() -> list[str]:
  """The Sphinx part of the README's docs command, as arguments."""
  readme = (ROOT / "README.md").read_text()
  [line] = [l.strip() for l in readme.splitlines() if "-m sphinx" in l and "&&" in l]
  sphinx_part = line.split("&&")[-1].strip()
  args = shlex.split(sphinx_part)
  assert args[:3] == ["python3", "-m", "sphinx"], line
  assert "-W" in args, "the docs must build with warnings as errors"
  return args


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory) -> pathlib.Path:
  """The HTML site, built with the README's command into a temporary directory."""
  build = tmp_path_factory.mktemp("docs")
  args = readme_docs_command()
  html_dir = build / "html"
  command = [sys.executable, *args[1:-1], str(html_dir), "-d", str(build / "doctrees")]
  result = subprocess.run(
      command, check=False, cwd=ROOT, capture_output=True, text=True,
      timeout=BUILD_TIMEOUT,
  )
  assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stderr[-6000:]}"
  return html_dir


class _Collector(html.parser.HTMLParser):
  """The ``id`` attributes, ``<img src>`` and loaded resources of one HTML page."""

  def __init__(self):
    super().__init__()
    self.ids: set[str] = set()
    self.images: list[str] = []
    self.resources: list[str] = []  # scripts, style sheets, images, fonts the page loads

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if "id" in attrs:
      self.ids.add(attrs["id"])
    if tag == "img" and attrs.get("src"):
      self.images.append(attrs["src"])
    if tag in ("script", "img", "iframe") and attrs.get("src"):
      self.resources.append(attrs["src"])
    if tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet", "preload"):
      self.resources.append(attrs["href"])


def parse(page: pathlib.Path) -> _Collector:
  collector = _Collector()
  collector.feed(page.read_text())
  return collector


@pytest.mark.slow
def test_every_public_name_has_an_api_entry(built_docs):
  ids = set()
  for page in (built_docs / "_autosummary").glob("*.html"):
    ids |= parse(page).ids
  missing = [name for name in layca_optax.__all__ if f"layca_optax.{name}" not in ids]
  assert not missing, f"no API entry (anchor id) for {missing}"
  api_page = (built_docs / "api.html").read_text()
  unlinked = [
      name for name in layca_optax.__all__
      if f'href="_autosummary/layca_optax.{name}.html' not in api_page
  ]
  assert not unlinked, f"the API page does not link to {unlinked}"


@pytest.mark.slow
def test_api_pages_render_the_docstring_math_and_examples(built_docs):
  page = (built_docs / "_autosummary" / "layca_optax.layca.html").read_text()
  assert re.search(r'class="math[^"]*"', page), "the docstring's math is not rendered"
  assert "&gt;&gt;&gt;" in page, "the docstring's example is missing"
  text = re.sub(r"<[^>]+>", "", page)
  assert "layca(learning_rate" in text and "alpha" in text, "the signature is missing"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_notebook_pages_show_figures(built_docs, name):
  page = built_docs / name
  images = [src for src in parse(page).images if src.endswith(".png")]
  assert images, f"{name} shows no figure"
  for src in images:
    assert (page.parent / src).is_file(), f"{name}: {src} was not copied"
  assert "Traceback" not in page.read_text()


@pytest.mark.slow
def test_executed_guides_show_outputs(built_docs):
  """The Markdown pages' code cells ran: their printed output and figures are in the HTML."""
  measuring = built_docs / "guides" / "measuring.html"
  assert [src for src in parse(measuring).images if src.endswith(".png")]
  getting_started = (built_docs / "getting_started.html").read_text()
  assert "turned 0.03" in getting_started  # arctan(3**-3) = 0.03702 rad per kernel


@pytest.mark.slow
def test_no_page_loads_anything_from_the_network(built_docs):
  external = {
      str(page.relative_to(built_docs)): [
          src for src in parse(page).resources if re.match(r"(https?:)?//", src)
      ]
      for page in built_docs.rglob("*.html")
  }
  external = {page: srcs for page, srcs in external.items() if srcs}
  assert not external, f"pages load from the network: {external}"
  mathjax = built_docs / "_static" / "mathjax" / "tex-chtml.js"
  assert mathjax.is_file(), "MathJax is not bundled with the site"


@pytest.mark.slow
def test_notebook_pages_show_a_real_run_and_tables(built_docs):
  tour = (built_docs / "notebooks" / "paper_tour.html").read_text()
  assert "<table" in tour and "| run |" not in tour, "the results tables are not tables"
  assert "nan" not in re.sub(r"<[^>]+>", " ", tour).split(), "a result is NaN"
