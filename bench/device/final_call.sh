#!/bin/bash
# The session's last device call (coordinator): trainings that only need the GPU's capacity side by side first
# (issue 15: three recipes' cpu profiles, 8 points; issue 19: every model config on MQAR, 8 runs), each result packed
# as soon as it exists; then, on a quiet GPU, issue 19's steps/s of hybrid.train vs a bare loop.
source .whl/setup_project.sh > /dev/null || exit 1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
mkdir -p /tmp/o15 /tmp/o19
(CONFIGS_LIMIT=195 OUT=/tmp/o19 bash bench/device/19_configs_learn.sh > /tmp/o19/stdout.txt 2>&1) &
cfg=$!
OUT=/tmp/o15 bash bench/device/15_reproduce.sh 200 > /tmp/o15/stdout.txt 2>&1
el "reproductions done"; cp /tmp/o15/repro.tgz /tmp/o15/repro.log "$OUT/"; cat /tmp/o15/repro.log
wait $cfg; el "configs done"; cp /tmp/o19/19_configs_learn.txt /tmp/o19/19_configs_jamba_small.log "$OUT/"
cat /tmp/o19/19_configs_learn.txt
timeout 70 python3 bench/device/19_throughput.py "$OUT/19_throughput.jsonl" > "$OUT/19_throughput.log" 2>&1
el "throughput done"; cat "$OUT/19_throughput.jsonl"
