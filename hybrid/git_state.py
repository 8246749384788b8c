"""The commit of the code that runs, for run records and benchmark rows (no torch, no Lightning: cheap to import)."""
import os
import subprocess
from pathlib import Path


def git_state(repo: Path | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the repository holding this package.

    HYBRID_GIT_COMMIT (and HYBRID_GIT_DIRTY=0/1) name them instead where the checkout's own git metadata is not
    the code's: a copy of the working tree sent to another machine keeps the .git of an older commit.
    """
    if os.environ.get("HYBRID_GIT_COMMIT"):
        dirty = os.environ.get("HYBRID_GIT_DIRTY")
        return {"commit": os.environ["HYBRID_GIT_COMMIT"], "dirty": None if dirty is None else dirty == "1"}
    repo = repo or Path(__file__).resolve().parents[1]
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return {"commit": head.stdout.strip(), "dirty": bool(dirty)}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
