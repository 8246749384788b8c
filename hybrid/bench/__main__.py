"""`python -m hybrid.bench <what> [options]`: run the benchmark module hybrid.bench.<what> (its main(argv))."""
import importlib
import pkgutil
import sys
from pathlib import Path


def subcommands() -> list[str]:
    """The modules of this package that have a main(argv)."""
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")]
    return sorted(n for n in names if hasattr(importlib.import_module(f"hybrid.bench.{n}"), "main"))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = subcommands()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m hybrid.bench <what> [options]; <what> is one of: {', '.join(names)}\n"
              f"       python -m hybrid.bench <what> --help  for its options")
        return 0 if argv else 2
    if argv[0] not in names:
        print(f"unknown benchmark {argv[0]!r}; allowed: {', '.join(names)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"hybrid.bench.{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
