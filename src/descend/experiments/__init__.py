"""Executable reproductions of the texts' claims: ``descend experiment NAME``.

Each module here is one experiment. The module ``foo_bar.py`` is run by
``descend experiment foo-bar`` and defines:

    DESCRIPTION: str                               one line for ``descend experiment --list``
    CLAIM: str                                     the text's claim it reproduces, with the citation
    def add_arguments(parser: argparse.ArgumentParser) -> None   its own options
    def verdict(results: dict) -> tuple[str, str]  (status, evidence) from the numbers of a run
    def run(args: argparse.Namespace) -> int       runs it, prints a table, returns an exit code

``verdict`` reads the dict the run writes as JSON into its run directory and returns a
status, "reproduced", "partly reproduced" or "not reproduced", and one line of evidence
quoting the measured numbers that decide it. ``run`` ends by printing
``claim: <CLAIM>`` and ``verdict: <status> - <evidence>``, stores ``claim``, ``verdict``
and ``verdict_evidence`` in that JSON, and writes its figures as PNG beside it.

``args`` always carries ``run_dir`` (a pathlib.Path, created), ``data_dir``
(str or None), ``seed`` (int), ``quiet`` (bool) and ``budget`` ("cpu" or "full").
Experiments are found by listing this package; there is no registry to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from descend.errors import ConfigError


def names() -> list[str]:
    """The experiment names, as typed on the command line."""
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_")
    )


def load(name: str) -> ModuleType:
    """Import the module of experiment ``name`` (``nielsen-ch6`` -> ``nielsen_ch6``)."""
    available = names()
    if name not in available:
        raise ConfigError(
            f"unknown experiment {name!r}; available: {', '.join(available) or '(none)'}"
        )
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
