"""Sphinx configuration of descend's documentation site.

Build (warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The site works offline: the theme (furo) uses the system's fonts, MathJax is served
from ``_static/mathjax/`` and intersphinx is off, so no page loads anything from the
network.
"""

from __future__ import annotations

import os
import sys

# Document the checkout's own code (src/ layout), whether or not it is installed.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "_ext")))

project = "descend"
author = "the descend authors"
copyright = "2026, the descend authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "gallery",  # docs/_ext/gallery.py: the gallery page from docs/gallery/*/entry.json
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
nitpicky = False

# -- Markdown (MyST) ---------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference (autodoc, napoleon, autosummary) --------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autoclass_content = "class"
# Members documented only by their own docstrings (not torch.nn.Module.forward's, say).
autodoc_inherit_docstrings = False
autosummary_generate = False
# The summary tables cut a docstring at its first sentence; "eq. 8.14" and "sec. 9.3" do
# not end one.
import sphinx.ext.autosummary as _autosummary  # noqa: E402

_autosummary.WELL_KNOWN_ABBREVIATIONS = tuple(_autosummary.WELL_KNOWN_ABBREVIATIONS) + tuple(
    before + word
    for word in ("eq.", "eqs.", "sec.", "secs.", "fig.", "figs.", "Alg.", "Algs.", "ch.", "cf.", "approx.")
    for before in (" ", "(")
)
add_module_names = False
python_display_short_literal_types = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- Math: MathJax 3 served from the site itself ------------------------------------------
# es5/tex-svg-full.js of the npm package mathjax@3.2.2 (Apache-2.0, LICENSE beside it):
# TeX input with every TeX extension built in and SVG output, so it needs no font files
# and loads no further component; the loader is told to load nothing else.
mathjax_path = "mathjax/tex-svg-full.js"
mathjax3_config = {
    "loader": {"load": []},
    "tex": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
    },
    "svg": {"fontCache": "global"},
    # MyST sets options.processHtmlClass, so that only marked-up math is typeset.
}

# -- HTML ---------------------------------------------------------------------------------
html_theme = "furo"
html_title = "descend"
html_static_path = ["_static"]
html_css_files = ["descend.css"]
html_theme_options = {
    "navigation_with_keys": True,
    "sidebar_hide_name": False,
}
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
# No web fonts, no external resources: furo uses the system font stacks.
html_permalinks_icon = "#"
