"""The repository stands alone: its comments and docstrings cite the texts (Deep Learning
section / equation / algorithm, Nielsen's chapters, the CS189 notes) or say things in plain
words; they never point at documents outside the repository, at tracker issue numbers or at
capability labels of a requirements list, and the library's docstrings hold no timings
(those go in benchmark output and the README, where they are dated and can be rerun).

Only comments and string literals are read (code such as ``Path(..) / "shared" / "data"``
that locates a data folder is not prose); "../shared" is prose only in comments and
docstrings, since a path string in code may locate data. Shell and TOML files contribute
their ``#`` comment lines.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()

# A capability label: a category letter and a number, e.g. O13, R1-R4 (LeNet-5's layer
# names C1, S2, C3 ... are legitimate, so a bare label counts only after "SPEC" or as the
# whole content of parentheses, alone or as a list: "(O13)", "(R1, R2, R4)", "(I1-I4)", or
# as a tag after "/" or ";": "sec. 8.3.1/O15:", "CS189; H3)").
_ID = r"[OICHRSD]\d{1,2}"
PROSE_PATTERNS = {
    "requirements label": re.compile(rf"\bSPEC\b|\(\s*{_ID}(?:\s*[-,/]\s*(?:{_ID}|\d{{1,2}}))*\s*\)|[;/]\s*{_ID}(?:\s*[-,]\s*{_ID})*\s*(?=[:;)])"),
    "outside document": re.compile(r"\b(?:DESIGN|SPEC|STYLE)\.md\b|\bshared/texts\b"),
    "issue number": re.compile(r"\bissues?\s*#?\s*\d+\b|(?<![\w&/])#\d+\b", re.IGNORECASE),
}
DOC_ONLY_PATTERNS = {
    "path outside the repository": re.compile(r"\.\./shared\b"),
}
TIMING_PATTERNS = {  # library docstrings only
    "timing": re.compile(
        r"\b\d+(?:\.\d+)?\s*(?:minutes?|mins?|seconds?|hours?)\b"
        r"|\b\d+(?:\.\d+)?(?:\s*-\s*\d+(?:\.\d+)?)?\s*x\s+(?:faster|slower)\b"
        r"|\b[Mm]easured\b[\s\S]{0,160}?\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?x\b"
        r"|\b\d+\.\d+\s*-\s*\d+\.\d+x\b"
    ),
}


def _python_prose(path: Path) -> list[tuple[int, str, bool]]:
    """(line, text, is_comment_or_docstring) for each comment and string literal of a file."""
    out, previous = [], tokenize.NEWLINE
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string, True))
        elif tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            docstring = tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT,
                                                                     tokenize.DEDENT, tokenize.ENCODING)
            out.append((tok.start[0], tok.string, docstring))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
    return out


def _hash_comments(path: Path) -> list[tuple[int, str, bool]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(i, line, True) for i, line in enumerate(lines, 1) if line.lstrip().startswith("#")]


def _files() -> list[Path]:
    files = [p for top in ("src", "tests", "benchmarks") for p in sorted((REPO / top).rglob("*.py"))]
    files += sorted((REPO / "src").rglob("*.toml"))
    files += [p for p in (REPO / "pyproject.toml", REPO / ".ci" / "run") if p.is_file()]
    return [p for p in files if p.resolve() != THIS]


def _offences(path: Path) -> list[str]:
    pieces = _python_prose(path) if path.suffix == ".py" else _hash_comments(path)
    library = path.suffix == ".py" and (REPO / "src") in path.parents
    rel = path.relative_to(REPO)
    found = []
    for line, text, doc in pieces:
        checks = dict(PROSE_PATTERNS)
        if doc:
            checks.update(DOC_ONLY_PATTERNS)
        if doc and library:
            checks.update(TIMING_PATTERNS)
        for what, pattern in checks.items():
            for m in pattern.finditer(text):
                at = line + text.count("\n", 0, m.start())
                found.append(f"{rel}:{at}: {what}: {m.group(0)!r}")
    return found


def test_patterns_catch_what_they_should_and_spare_legitimate_text():
    def hits(text, patterns):
        return [name for name, p in patterns.items() if p.search(text)]

    for bad in ["(SPEC S2)", "(O13)", "(R1, R2, R4)", "(I1-I4)", "sec. 8.3.1/O15: choose", "ch. 3 / H6: slow",
                "bagging\"; H4)", "see DESIGN.md",
                "STYLE.md", "issue 8", "(issue #12)", "fixes #12", "shared/texts/dlbook-ch9.txt"]:
        assert hits(bad, PROSE_PATTERNS), bad
    assert hits("MNIST from ../shared/data", DOC_ONLY_PATTERNS)
    for bad in ["takes 3 minutes", "~1.3x faster", "measured 1.1-1.6x against it", "in 40 minutes",
                "Measured forward+backward (one\nthread): the layer 0.7-2.8x", "the LSTM within 1.1-1.6x of"]:
        assert hits(bad, TIMING_PATTERNS), bad
    for good in ["C1 6 maps, 5x5 convolution", "(16 C3 maps, 6 S2 maps)", "L2 regularization", "W1, b1, W2",
                 "N&W eq. 6.20", "spec = IDX_DATASETS[name]", "sec. 10.2.2, eqs. 10.17-10.21", "at most 10x further",
                 "default 300 s", "rates 10x smaller", "H4 = acts.shape", "a 5x5 kernel", "Algorithm 8.1"]:
        assert not hits(good, {**PROSE_PATTERNS, **DOC_ONLY_PATTERNS, **TIMING_PATTERNS}), good


def test_comments_and_docstrings_cite_only_the_texts():
    offences = [o for path in _files() for o in _offences(path)]
    assert not offences, "comments/docstrings that point outside the repository:\n" + "\n".join(offences)
