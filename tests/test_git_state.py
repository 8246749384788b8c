"""git_state (run records, bench rows): the checkout's commit, or the one named by HYBRID_GIT_COMMIT on a copied tree."""
import subprocess
from pathlib import Path

from hybrid.git_state import git_state


def test_git_state_reads_this_checkout(monkeypatch):
    monkeypatch.delenv("HYBRID_GIT_COMMIT", raising=False)
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode:
        assert git_state() == {"commit": None, "dirty": None}
    else:
        assert git_state()["commit"] == head.stdout.strip()


def test_git_state_honours_the_named_commit(monkeypatch):
    monkeypatch.setenv("HYBRID_GIT_COMMIT", "abc123")
    monkeypatch.setenv("HYBRID_GIT_DIRTY", "1")
    assert git_state() == {"commit": "abc123", "dirty": True}
    monkeypatch.setenv("HYBRID_GIT_DIRTY", "0")
    assert git_state() == {"commit": "abc123", "dirty": False}
    monkeypatch.delenv("HYBRID_GIT_DIRTY")
    assert git_state() == {"commit": "abc123", "dirty": None}
