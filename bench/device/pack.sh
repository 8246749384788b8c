#!/bin/bash
# Packs .whl/ for a device call (carry [".whl"]): ../shared/device/pack.sh with what the device image lacks beyond
# Hydra and OmegaConf — the joblib launcher (hydra/launcher=local, every recipe's gpu profile), and soundfile and
# datasets with their pure-Python dependencies (the audio task). Versions: the project's .venv where it has them.
# Then, and after each commit before a call: git rev-parse HEAD > .whl/commit; echo 0 > .whl/dirty (1 if the tree
# has uncommitted changes).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
py=.venv/bin/python
ver() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
bash ../shared/device/pack.sh hydra-joblib-launcher joblib soundfile cffi pycparser \
  "datasets==$(ver datasets)" "dill==$(ver dill)" "multiprocess==$(ver multiprocess)"
# Every device command that sources .whl/setup_project.sh then records the commit of .whl/commit (hybrid/git_state.py;
# the device's copy of the tree has no up-to-date .git): session 8's SSD rows said a7b62d4-dirty without it.
echo 'export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)' \
  >> .whl/setup_project.sh
