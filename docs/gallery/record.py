"""Record a gallery entry: run one experiment and keep what the site shows of it.

    python docs/gallery/record.py NAME -- ARGS...

runs ``python -m descend experiment NAME ARGS... --run-dir TMP`` in a subprocess (this
interpreter, this environment), echoes its output, and writes ``docs/gallery/NAME/``:
the PNG figures of the run and ``entry.json``::

    {"experiment", "claim", "verdict", "evidence", "command", "date", "machine",
     "seconds", "cpu_seconds", "table", "figures"}

``seconds`` is the run's wall time; ``cpu_seconds`` the processor time it used (user +
system), which tells the run's cost when the machine was shared.

``claim``, ``verdict`` and ``evidence`` come from the JSON results the run wrote (the file
holding the key ``claim``; ``results.json`` first); ``table`` is what the run printed,
less its progress lines (indented lines), the claim and verdict lines and the closing
``results in ...`` line. Run it from the repository root with the checkout's ``src`` on
``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_PNG_BYTES = 250_000


def machine() -> str:
    """E.g. ``2-core AMD EPYC (AVX512-BF16), torch 2.13.0, 2 threads``."""
    import torch

    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    bf16 = " (AVX512-BF16)" if "avx512_bf16" in flags.split() else ""
    return (f"{os.cpu_count()}-core {model}{bf16}, torch {torch.__version__.split('+')[0]}, "
            f"{torch.get_num_threads()} threads")


def printed_table(stdout: str) -> str:
    """The run's printout without progress lines, the claim/verdict lines and ``results in``."""
    keep = []
    for line in stdout.splitlines():
        if line[:1].isspace() or line.startswith(("claim: ", "verdict: ", "results in ")):
            continue
        keep.append(line.rstrip())
    return "\n".join(keep).strip("\n")


def results_of(run_dir: Path) -> dict:
    """The JSON results of the run that hold its claim and verdict."""
    candidates = [run_dir / "results.json", *sorted(run_dir.glob("*.json"))]
    for path in candidates:
        if path.is_file():
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "claim" in data and "verdict" in data:
                return data
    raise SystemExit(f"record.py: no JSON in {run_dir} holds 'claim' and 'verdict'; does the experiment "
                     "call verdict() and store its result?")


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def record(name: str, args: list[str], out_root: Path = HERE) -> dict:
    from descend.io import atomic_path, atomic_write_json

    with tempfile.TemporaryDirectory(prefix=f"gallery-{name}-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "descend", "experiment", name, *args, "--run-dir", str(run_dir)]
        start, cpu = time.perf_counter(), _children_cpu()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # echo the progress lines as they come
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        lines = []
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        code = proc.wait()
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
        if code != 0:
            raise SystemExit(f"record.py: the experiment exited with code {code}; nothing recorded")
        results = results_of(run_dir)
        figures = sorted(p.name for p in run_dir.glob("*.png"))
        too_big = [f for f in figures if (run_dir / f).stat().st_size > MAX_PNG_BYTES]
        if too_big:
            raise SystemExit(f"record.py: {', '.join(too_big)} larger than {MAX_PNG_BYTES} bytes; "
                             "draw it smaller (figure size or dpi)")
        out = out_root / name
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.png"):
            if old.name not in figures:
                old.unlink()
        for f in figures:
            with atomic_path(out / f) as target:
                shutil.copyfile(run_dir / f, target)
    entry = {
        "experiment": name,
        "claim": results["claim"],
        "verdict": results["verdict"],
        "evidence": results.get("verdict_evidence", ""),
        "command": shlex.join(["descend", "experiment", name, *args]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": machine(),
        "seconds": round(seconds, 1),
        "cpu_seconds": None if cpu != cpu else round(cpu, 1),
        "table": printed_table("".join(lines)),
        "figures": figures,
    }
    atomic_write_json(out / "entry.json", entry)
    return entry


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        own, rest = argv[:i], argv[i + 1:]
    else:
        own, rest = argv, []
    parser = argparse.ArgumentParser(description="Run an experiment and record its gallery entry.",
                                     usage="record.py NAME -- [experiment options...]")
    parser.add_argument("name", help="the experiment, as typed after `descend experiment`")
    ns = parser.parse_args(own)
    if "--run-dir" in rest:
        parser.error("--run-dir is chosen by record.py (a temporary folder); leave it out")
    entry = record(ns.name, rest)
    print(f"recorded {HERE / ns.name / 'entry.json'}: {entry['verdict']} ({entry['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
