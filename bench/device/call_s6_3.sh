#!/bin/bash
# Session 6, device call 3 (coordinator), <= 520 s on a fresh H200:
#  - issue 15: the audio recipe's gpu profile (its 4 points side by side; it failed in call 2 for want of soundfile
#    and datasets, now packed), for at most AUDIO_S s, then stopped and drawn from what completed;
#  - mamba-ssm's CUDA extension built beside it, then, quiet, issue 12's side-by-side benches
#    (bench/device/12_final.sh without its variants: scan vs mamba-ssm, the model bench with both scans and
#    MambaLMHeadModel, the M block vs mamba-ssm's Mamba);
#  - issue 14's SSD per-kernel stages and S block vs mamba-ssm's Mamba2 (timed out at 40 s in call 2).
source .whl/setup_project.sh > /dev/null || exit 1
export HYBRID_GIT_COMMIT=$(cat .whl/commit 2>/dev/null) HYBRID_GIT_DIRTY=$(cat .whl/dirty 2>/dev/null)
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
R=/tmp/results; mkdir -p $R/i12 $R/i14
python3 -c "import datasets, soundfile; print('datasets', datasets.__version__, 'soundfile', soundfile.__version__)" 2>&1 | tail -1
setsid nohup bash -c "nice -n 5 bash .whl/build_mamba_ssm.sh > $R/build_mamba_ssm.log 2>&1; echo \$? > /tmp/build.rc" \
  > /dev/null 2>&1 < /dev/null &
export RECIPES=audio_selective_vs_lti
bash bench/device/15_gpu_profiles.sh start
bash bench/device/15_gpu_profiles.sh wait $(( ${AUDIO_S:-230} - ($(date +%s) - T0) ))
bash bench/device/15_gpu_profiles.sh stop
bash bench/device/15_gpu_profiles.sh figures
bash bench/device/15_gpu_profiles.sh pack $OUT/audio | tail -16
el "audio packed"
while [ ! -f /tmp/build.rc ] && (( $(date +%s) - T0 < 290 )); do sleep 5; done
el "build rc $(cat /tmp/build.rc 2>/dev/null || echo 'still running')"; tail -2 $R/build_mamba_ssm.log
OUT=$R/i12 END_S=0 timeout 225 bash bench/device/12_final.sh > $R/i12/stdout.txt 2>&1
el "12 final"; grep -v "WARNING: Target" $R/i12/stdout.txt | tail -24
timeout $(( ${END_S:-515} - ($(date +%s) - T0) )) python3 -m hybrid.bench ssd --device cuda --ssd-only \
  --providers ours:triton mamba_ssm --lengths 1024 --stages 16384 --block --out $R/i14/ssd_stages_block.json \
  > $R/i14/bench.log 2>&1
el "ssd stages/block exit $?"; grep -v "^  L=\|^  block \|^USDT\|Warning\|warn\|^wrote" $R/i14/bench.log | tail -30
tar czf $OUT/benches.tgz -C $R i12 i14 build_mamba_ssm.log
el done
