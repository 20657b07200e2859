"""Benchmarks of Spot Guard on the local sandbox: ``python -m bench`` (or ``tox -e bench``, ``make bench``).

Each benchmark measures figures (bench.figures.Figure) and the runner merges them into bench/results.json and
regenerates docs/benchmarks.md. Benchmarks are not tests: nothing here fails because of a timing.
"""
