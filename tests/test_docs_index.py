"""The documentation's section index (docs/texts/sections.toml) is complete and correct.

Every numbered algorithm of Deep Learning ch. 8 and every numbered equation of secs.
8.3-8.7, 9.1-9.10 and 10.1-10.2 has an entry, in the order of the text and in the section
the text prints it in; each entry names code or says why there is none; every code name
imports, every test exists as a function of its file, every experiment is one that
``descend experiment`` runs; docs/texts/section-index.md is the rendering of the data; and
the chapter pages cite only names, tests and experiments that exist. Sphinx is not needed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import descend.experiments

REPO = Path(__file__).resolve().parent.parent
TEXTS = REPO / "docs" / "texts"

# Transcribed from the text: each number with the section it is printed in (Deep Learning,
# Goodfellow, Bengio & Courville). Algorithm boxes float to the next page in print; their
# section is the one that introduces them.
EXPECTED = {
    # 8.3 Basic algorithms
    "Algorithm 8.1": "8.3.1", "eq. 8.12": "8.3.1", "eq. 8.13": "8.3.1", "eq. 8.14": "8.3.1",
    "eq. 8.15": "8.3.2", "eq. 8.16": "8.3.2", "eq. 8.17": "8.3.2", "Algorithm 8.2": "8.3.2",
    "eq. 8.18": "8.3.2", "eq. 8.19": "8.3.2", "eq. 8.20": "8.3.2",
    "eq. 8.21": "8.3.3", "eq. 8.22": "8.3.3", "Algorithm 8.3": "8.3.3",
    # 8.4 Parameter initialization strategies
    "eq. 8.23": "8.4", "eq. 8.24": "8.4",
    # 8.5 Algorithms with adaptive learning rates
    "Algorithm 8.4": "8.5.1", "Algorithm 8.5": "8.5.2", "Algorithm 8.6": "8.5.2",
    "Algorithm 8.7": "8.5.3",
    # 8.6 Approximate second-order methods
    "eq. 8.25": "8.6", "eq. 8.26": "8.6.1", "eq. 8.27": "8.6.1", "Algorithm 8.8": "8.6.1",
    "eq. 8.28": "8.6.1",
    "eq. 8.29": "8.6.2", "eq. 8.30": "8.6.2", "eq. 8.31": "8.6.2", "Algorithm 8.9": "8.6.2",
    "eq. 8.32": "8.6.3", "eq. 8.33": "8.6.3",
    # 8.7 Optimization strategies and meta-algorithms
    "eq. 8.34": "8.7.1", "eq. 8.35": "8.7.1", "eq. 8.36": "8.7.1", "eq. 8.37": "8.7.1",
    "eq. 8.38": "8.7.2", "eq. 8.39": "8.7.3", "eq. 8.40": "8.7.6",
    # 9.1 The convolution operation
    "eq. 9.1": "9.1", "eq. 9.2": "9.1", "eq. 9.3": "9.1", "eq. 9.4": "9.1", "eq. 9.5": "9.1",
    "eq. 9.6": "9.1",
    # 9.5 Variants of the basic convolution function
    "eq. 9.7": "9.5", "eq. 9.8": "9.5", "eq. 9.9": "9.5", "eq. 9.10": "9.5", "eq. 9.11": "9.5",
    "eq. 9.12": "9.5", "eq. 9.13": "9.5", "eq. 9.14": "9.5",
    # 9.10 The neuroscientific basis for convolutional networks
    "eq. 9.15": "9.10", "eq. 9.16": "9.10", "eq. 9.17": "9.10", "eq. 9.18": "9.10",
    # 10.1 Unfolding computational graphs
    "eq. 10.1": "10.1", "eq. 10.2": "10.1", "eq. 10.3": "10.1", "eq. 10.4": "10.1",
    "eq. 10.5": "10.1", "eq. 10.6": "10.1", "eq. 10.7": "10.1",
    # 10.2 Recurrent neural networks
    "eq. 10.8": "10.2", "eq. 10.9": "10.2", "eq. 10.10": "10.2", "eq. 10.11": "10.2",
    "eq. 10.12": "10.2", "eq. 10.13": "10.2", "eq. 10.14": "10.2",
    "eq. 10.15": "10.2.1", "eq. 10.16": "10.2.1",
    "eq. 10.17": "10.2.2", "eq. 10.18": "10.2.2", "eq. 10.19": "10.2.2", "eq. 10.20": "10.2.2",
    "eq. 10.21": "10.2.2",
}

ORACLES = {"numpy transcription", "gradcheck", "finite differences", "autograd", "torch", "scipy",
           "sklearn", "closed form", "invariant"}
FIELDS = {"id", "section", "title", "code", "reason", "tests", "oracle", "experiment"}


def _render_module():
    spec = importlib.util.spec_from_file_location("render_index", TEXTS / "render_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = _render_module()
ENTRIES = RENDER.load()
BY_ID = {e["id"]: e for e in ENTRIES}


def resolve(dotted: str):
    """Import the longest module prefix of ``dotted`` and getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_functions(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


test_functions.__test__ = False  # a helper, not a test


def imports_reference(path: str) -> bool:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "reference":
            return True
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "reference" for a in node.names):
            return True
    return False


def test_every_numbered_item_of_the_text_is_there_once_in_order_and_section():
    ids = [e["id"] for e in ENTRIES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert set(EXPECTED) - set(ids) == set(), "missing from sections.toml"
    assert set(ids) - set(EXPECTED) == set(), "not a numbered item of the text"
    assert ids == list(EXPECTED), "entries out of the text's order"
    wrong = {e["id"]: e["section"] for e in ENTRIES if e["section"] != EXPECTED[e["id"]]}
    assert wrong == {}, f"printed in another section: {wrong}"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["id"])
def test_each_entry_has_code_or_a_reason(entry):
    assert set(entry) <= FIELDS, set(entry) - FIELDS
    assert entry["title"].strip()
    code, reason = entry.get("code", []), entry.get("reason", "")
    assert bool(code) != bool(reason.strip()), "give code or a reason, not both"
    if code:
        assert entry.get("tests"), "code without a test"
        assert entry.get("oracle"), "tests without the oracle they compare against"
    assert set(entry.get("oracle", [])) <= ORACLES, set(entry["oracle"]) - ORACLES
    assert bool(entry.get("tests")) == bool(entry.get("oracle"))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.get("code")], ids=lambda e: e["id"])
def test_every_code_name_imports(entry):
    for name in entry["code"]:
        assert name.startswith("descend.") and not any(p.startswith("_") for p in name.split(".")), name
        assert resolve(name) is not None, name


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.get("tests")], ids=lambda e: e["id"])
def test_every_test_is_a_function_of_an_existing_test_file(entry):
    for test in entry["tests"]:
        path, _, function = test.partition("::")
        assert re.fullmatch(r"tests/(?:\w+/)*test_\w+\.py", path), test
        assert (REPO / path).is_file(), f"no file {path}"
        assert function.startswith("test_") and function in test_functions(path), f"no {function} in {path}"
    if "numpy transcription" in entry["oracle"]:
        files = {t.partition("::")[0] for t in entry["tests"]}
        assert any(imports_reference(f) for f in files), "no listed test file imports tests/reference/"


def test_experiments_are_ones_descend_runs():
    names = set(descend.experiments.names())
    used = {e["id"]: e["experiment"] for e in ENTRIES if "experiment" in e}
    assert used, "no entry names an experiment"
    assert {i: x for i, x in used.items() if x not in names} == {}


def test_the_index_page_is_the_rendering_of_the_data():
    page = (TEXTS / "section-index.md").read_text(encoding="utf-8")
    assert page == RENDER.render(ENTRIES), "run: python docs/texts/render_index.py"


def test_every_section_of_the_index_has_a_target_on_a_chapter_page():
    pages = "".join(p.read_text(encoding="utf-8") for p in sorted(TEXTS.glob("*.md")))
    targets = set(re.findall(r"^\(([\w-]+)\)=$", pages, flags=re.MULTILINE))
    missing = sorted({e["section"] for e in ENTRIES if RENDER.section_label(e["section"]) not in targets})
    assert missing == [], f"no (dl-...)= target for sections {missing}"


PAGES = sorted(p for p in TEXTS.glob("*.md") if p.name != "section-index.md")
ROLE = re.compile(r"\{py:(?:obj|class|func|meth|attr|mod|data)\}`(?:[^`<]*<)?~?([\w.]+)>?`")
TEST_REF = re.compile(r"(tests/(?:\w+/)*test_\w+\.py)(?:::(\w+))?")
EXPERIMENT_REF = re.compile(r"descend experiment ([a-z0-9][a-z0-9-]*)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_chapter_pages_cite_only_what_exists(page):
    text = page.read_text(encoding="utf-8")
    for name in ROLE.findall(text):
        assert resolve(name) is not None, name
    for path, function in TEST_REF.findall(text):
        assert (REPO / path).is_file(), path
        if function:
            assert function in test_functions(path), f"no {function} in {path}"
    names = set(descend.experiments.names())
    for name in EXPERIMENT_REF.findall(text):
        assert name in names, f"descend experiment {name}"


def test_the_chapter_pages_exist_and_cite_code():
    names = {p.name for p in PAGES}
    assert {"index.md", "dl-ch8.md", "dl-ch9.md", "dl-ch10.md", "nndl-ch6.md", "cs189.md"} <= names
    for page in PAGES:
        if page.name != "index.md":
            assert ROLE.search(page.read_text(encoding="utf-8")), f"{page.name} links no code"
