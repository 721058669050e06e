"""The documentation site (docs/) builds with warnings as errors, works offline, and its
API reference documents every public name of the seven packages.

The site is built once per test session into a temporary folder by exactly the command
the docs give (``python -m sphinx -W --keep-going -b html docs <out>``); the tests then
read the built pages, style sheets and the object inventory (``objects.inv``).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import posixpath
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("furo", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("myst_parser", reason="the docs extra is not installed: pip install -e '.[docs]'")

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PACKAGES = ("descend.optim", "descend.nn", "descend.init", "descend.train", "descend.data",
            "descend.models", "descend.network3")
MATHJAX = "_static/mathjax/tex-svg-full.js"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once; return (output folder, sphinx's log)."""
    out = tmp_path_factory.mktemp("docs") / "html"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    return out, proc


def test_strict_build_succeeds(site):
    out, proc = site
    assert proc.returncode == 0, f"sphinx -W failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    assert (out / "index.html").is_file() and (out / "objects.inv").is_file()


# ----------------------------------------------------------------------------- offline
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.IGNORECASE | re.DOTALL)
_CSS_IMPORT = re.compile(r"""@import\s+(['"])(.*?)\1""", re.IGNORECASE)  # @import url(...) is a url()


def is_remote(url: str) -> bool:
    """True for a URL that the browser would fetch from elsewhere: a scheme other than
    ``data:`` (http:, https:, ftp: ...) or a scheme-relative ``//host/...``."""
    url = url.strip()
    if url.startswith("//") or url.startswith("\\\\"):
        return True
    return bool(_SCHEME.match(url)) and not url.lower().startswith("data:")


def css_urls(css: str) -> list[str]:
    return [m.group(2) for m in _CSS_URL.finditer(css)] + [m.group(2) for m in _CSS_IMPORT.finditer(css)]


class _Loads(HTMLParser):
    """Collects every URL a page makes the browser load (not the links a reader follows)."""

    ATTRS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "iframe": ("src",),
             "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
             "embed": ("src",), "object": ("data",), "track": ("src",), "image": ("href", "xlink:href"),
             "use": ("href", "xlink:href"), "input": ("src",), "frame": ("src",)}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in self.ATTRS.get(tag, ()):
            value = attrs.get(name)
            if not value:
                continue
            if name == "srcset":
                self.urls += [part.strip().split()[0] for part in value.split(",") if part.strip()]
            else:
                self.urls.append(value)
        if attrs.get("style"):
            self.urls += css_urls(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += css_urls(data)


def page_loads(html: str) -> list[str]:
    parser = _Loads()
    parser.feed(html)
    parser.close()
    return parser.urls


def test_offline_checks_catch_remote_loads():
    # The checks themselves, on hand-made snippets: remote loads are caught...
    bad = ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-svg.js"></script>'
           '<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Lato">'
           '<link rel="preload" href="http://example.org/font.woff2" as="font">'
           '<img srcset="a.png 1x, https://example.org/b.png 2x">'
           '<style>@import url("https://example.org/x.css"); body { background: url(//x.org/a.png) }</style>')
    assert sum(map(is_remote, page_loads(bad))) == 6
    assert [u for u in css_urls("@import 'https://fonts.example/a.css'; a { b: url(http://x/y) }") if is_remote(u)]
    # ... and local ones, data: URIs and links a reader follows are not.
    good = ('<script src="_static/mathjax/tex-svg-full.js"></script><link href="../_static/furo.css">'
            '<img src="../_images/a.png"><a href="https://www.sphinx-doc.org/">Sphinx</a>'
            '<style>a { mask: url("data:image/svg+xml;charset=utf-8,<svg/>") }</style>')
    assert not [u for u in page_loads(good) if is_remote(u)]


def test_no_page_or_style_sheet_loads_anything_from_the_network(site):
    out, proc = site
    assert proc.returncode == 0, "the build failed; see test_strict_build_succeeds"
    pages = sorted(out.rglob("*.html"))
    sheets = sorted(out.rglob("*.css"))
    assert len(pages) >= 10 and sheets
    offences = []
    for page in pages:
        offences += [f"{page.relative_to(out)}: {u}" for u in page_loads(page.read_text(encoding="utf-8"))
                     if is_remote(u)]
    for sheet in sheets:
        offences += [f"{sheet.relative_to(out)}: {u}" for u in css_urls(sheet.read_text(encoding="utf-8"))
                     if is_remote(u)]
    assert not offences, "resources loaded from the network:\n" + "\n".join(offences)


# ----------------------------------------------------------------------------- API reference
def public_names(module_name: str) -> list[str]:
    """The module's ``__all__``, or else the public names it defines itself (functions,
    classes and constants assigned at its top level, not names it imports)."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if not n.startswith("_")]


def test_public_names_reads_the_module():
    assert "lsuv_" in public_names("descend.init") and "SCHEMES" in public_names("descend.init")
    assert not {"torch", "nn", "math", "ConfigError", "annotations"} & set(public_names("descend.init"))


def test_every_public_name_is_a_documented_object(site):
    from sphinx.util.inventory import InventoryFile

    out, proc = site
    assert proc.returncode == 0, "the build failed; see test_strict_build_succeeds"
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    documented = {name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries}
    wanted = [f"{pkg}.{name}" for pkg in PACKAGES for name in public_names(pkg)]
    wanted += [f"descend.nn.functional.{name}" for name in public_names("descend.nn.functional")]
    assert len(wanted) > 200
    missing = [name for name in wanted if name not in documented]
    assert not missing, "public names without an entry in the API reference:\n" + "\n".join(missing)


# ----------------------------------------------------------------------------- math
def test_optimizer_pages_carry_math_for_the_vendored_mathjax(site):
    out, proc = site
    assert proc.returncode == 0, "the build failed; see test_strict_build_succeeds"
    assert (out / MATHJAX).is_file() and (out / "_static/mathjax/LICENSE").is_file()
    html = (out / "api" / "optim.html").read_text(encoding="utf-8")
    math = re.findall(r'<(?:span|div) class="math[^"]*">(.*?)</(?:span|div)>', html, re.DOTALL)
    inline = [m for m in math if m.startswith("\\(") and m.endswith("\\)")]
    display = [m for m in math if "\\[" in m and "\\]" in m]
    assert len(inline) >= 5 and display, "the optimizer page has too little MathJax-marked math"
    assert any("\\leftarrow" in m for m in display)
    scripts = [u.split("?")[0] for u in page_loads(html) if "mathjax" in u.lower()]
    assert scripts == ["../" + MATHJAX], scripts
    # The configuration MathJax reads before it starts: load no further component.
    config = re.search(r"window\.MathJax = (\{.*?\})</script>", html, re.DOTALL)
    assert config and '"loader": {"load": []}' in config.group(1)
