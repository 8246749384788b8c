#!/bin/bash
# Issue 12, for the coordinator's batch (not run this session): does keeping the scan backward's dB/dC partials in
# bf16 (no layout conversion per state in the compiled kernel, half their memory) pay? ~1.5 min; one file under $OUT.
source .whl/setup_project.sh || exit 1
timeout 200 python3 bench/device/12_half_partials_probe.py $OUT/scan_half_partials.json 2>&1 | tail -18
