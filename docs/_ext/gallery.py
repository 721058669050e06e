"""Sphinx extension: the gallery page, rendered from the recorded runs.

Every ``docs/gallery/NAME/entry.json`` (written by ``docs/gallery/record.py`` from a real
run of ``descend experiment NAME``) becomes a section of ``gallery/index``: the text's claim,
the verdict and its evidence, the figures, the exact command, date, machine and wall time,
and the table the run printed. A summary table of all verdicts comes first. The entries are
inserted where the page has the line ``<!-- gallery-entries -->``, as MyST Markdown, so a
new entry needs no edit of the page.

Enable it in ``conf.py``::

    sys.path.insert(0, os.path.abspath("_ext"))
    extensions += ["gallery"]
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

PAGE = "gallery/index"
MARKER = "<!-- gallery-entries -->"
KEYS = ("experiment", "claim", "verdict", "evidence", "command", "date", "machine", "seconds", "table", "figures")
VERDICTS = ("reproduced", "partly reproduced", "not reproduced")


def escape(text: str) -> str:
    """Plain text as inline Markdown: no emphasis, math, links or HTML by accident."""
    out = str(text).replace("\\", "\\\\")
    for c in "`*_$[]<>|#{}":
        out = out.replace(c, "\\" + c)
    return " ".join(out.split())


def fence(text: str, info: str = "text") -> list[str]:
    """A fenced code block longer than any backtick run inside ``text``."""
    ticks = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return [ticks + info, *text.splitlines(), ticks]


def load_entries(folder: Path) -> list[tuple[Path, dict]]:
    """The valid entries under ``folder`` (one per sub-folder), sorted by name; a broken one is
    reported as a warning (an error with ``-W``) and left out."""
    entries = []
    for path in sorted(folder.glob("*/entry.json")):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("gallery: cannot read %s: %s", path, exc)
            continue
        missing = [k for k in KEYS if k not in entry]
        if missing:
            logger.warning("gallery: %s lacks %s; record it again with docs/gallery/record.py", path,
                           ", ".join(missing))
            continue
        absent = [f for f in entry["figures"] if not (path.parent / f).is_file()]
        if absent:
            logger.warning("gallery: %s names figures that are not there: %s", path, ", ".join(absent))
            continue
        if entry["verdict"] not in VERDICTS:
            logger.warning("gallery: %s has verdict %r; expected one of %s", path, entry["verdict"],
                           ", ".join(VERDICTS))
            continue
        entries.append((path, entry))
    return entries


def render(entries: list[tuple[Path, dict]]) -> str:
    """The gallery's sections as MyST Markdown."""
    if not entries:
        return "No runs are recorded yet.\n"
    lines = ["| experiment | verdict |", "|---|---|"]
    for path, e in entries:
        lines.append(f"| {{ref}}`{e['experiment']} <gallery-{path.parent.name}>` | {escape(e['verdict'])} |")
    lines.append("")
    for path, e in entries:
        folder = path.parent.name
        lines += [f"(gallery-{folder})=", f"## {escape(e['experiment'])}", "",
                  f"**Claim.** {escape(e['claim'])}", "",
                  f"**Verdict: {escape(e['verdict'])}.** {escape(e['evidence'])}", ""]
        for figure in e["figures"]:
            lines += [f"![{escape(e['experiment'])}: {escape(figure)}]({folder}/{figure})", ""]
        lines += ["The run:", "", *fence(e["command"], "bash"), "",
                  f"recorded {escape(e['date'])} on {escape(e['machine'])}: {_time(e)}. It printed:",
                  "", *fence(e["table"]), ""]
    return "\n".join(lines) + "\n"


def _time(entry: dict) -> str:
    text = f"{float(entry['seconds']):.0f} s"
    if entry.get("cpu_seconds") is not None:
        text += f" wall time, {float(entry['cpu_seconds']):.0f} s of processor time"
    return text


def insert_entries(app, docname: str, source: list[str]) -> None:
    if docname != PAGE or MARKER not in source[0]:
        return
    folder = Path(app.srcdir) / "gallery"
    entries = load_entries(folder)
    for path, e in entries:
        app.env.note_dependency(str(path))
        for figure in e["figures"]:
            app.env.note_dependency(str(path.parent / figure))
    source[0] = source[0].replace(MARKER, render(entries))


def setup(app):
    app.connect("source-read", insert_entries)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
