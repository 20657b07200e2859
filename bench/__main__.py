"""``python -m bench [--only NAME ...] [--quick]``: run benchmarks on one sandbox, merge bench/results.json, docs.

Exit status: 0 when every selected benchmark produced its figures (whether or not they meet their targets: a
benchmark is not a test), 1 when one of them failed to measure, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import results
from bench.figures import Figure
from bench.registry import Benchmark, Context, discover

log = logging.getLogger("bench")


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run Spot Guard's benchmarks on the local sandbox; merge their figures into bench/results.json "
        "and regenerate docs/benchmarks.md.",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=names,
        help=f"run only these benchmarks and keep the others' figures (one of: {', '.join(names)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (said so in each figure's conditions), for a first look"
    )
    parser.add_argument("--list", action="store_true", help="name the benchmarks and exit")
    parser.add_argument(
        "--render-only", action="store_true", help="regenerate the docs from bench/results.json without measuring"
    )
    parser.add_argument("--results", type=Path, default=results.RESULTS_FILE, help="default: %(default)s")
    parser.add_argument("--docs", type=Path, default=results.DOCS_FILE, help="default: %(default)s")
    parser.add_argument("--keep-sandbox", action="store_true", help="keep the sandbox's directory (logs) afterwards")
    return parser


def _environment(quick: bool) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "quick": quick,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(selected: Sequence[Benchmark], quick: bool, keep: bool) -> tuple[list[Figure], list[str]]:
    """Every figure of the selected benchmarks (stamped) and the names of those that failed."""
    from sandbox.environment import Sandbox

    figures: list[Figure] = []
    failed: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="spotguard-bench-"))
    log.info(f"starting the sandbox (logs under {workdir})")
    with Sandbox(pairs=1, spot_desired=3, workdir=workdir / "sandbox", keep_workdir=keep) as sandbox:
        for bench in selected:
            environment = _environment(quick)
            context = Context(sandbox=sandbox, quick=quick, workdir=workdir / bench.name)
            context.workdir.mkdir(parents=True, exist_ok=True)
            log.info(f"running {bench.name}: {bench.description}")
            started = time.monotonic()
            try:
                measured = bench.run(context)
            except Exception:
                log.error(f"{bench.name} failed to measure:\n{traceback.format_exc()}")
                failed.append(bench.name)
                continue
            stamp = _now()
            figures += [
                dataclasses.replace(figure, benchmark=bench.name, measured_at=stamp, environment=environment)
                for figure in measured
            ]
            log.info(f"{bench.name} done in {time.monotonic() - started:.0f} s")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures, failed


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    benchmarks = discover()
    options = _parser(list(benchmarks)).parse_args(argv)
    if options.list:
        for name, bench in benchmarks.items():
            print(f"{name}: {bench.description}")
        return 0
    existing = results.load(options.results)
    if options.render_only:
        results.write_docs(existing, options.docs)
        return 0
    selected = [benchmarks[name] for name in (options.only or benchmarks)]
    figures, failed = _run(selected, options.quick, options.keep_sandbox)
    merged = results.merge(existing, figures, rerun={bench.name for bench in selected} - set(failed))
    results.save(merged, options.results)
    results.write_docs(merged, options.docs)
    for line in results.summary(figures):
        print("  ".join(f"{key}={value}" for key, value in line.items()))
    log.info(f"wrote {options.results} and {options.docs}")
    if failed:
        log.error(f"these benchmarks failed to measure (their old figures are kept): {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
