"""Benchmarks, run as scripts: `python -m hybrid.bench <what> [options]` (see __main__.py for the list).

Each subcommand is a module here with `main(argv) -> int`; it prints one table and writes long-format rows
(op, provider, mode, x, median, p20, p80, device, versions, commit) as JSON to bench/results/.
"""
