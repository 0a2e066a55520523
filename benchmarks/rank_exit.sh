#!/bin/bash
# How often a 2-rank sharded evaluation aborts at exit: run it in a loop for SECONDS, count the runs
# that fail or print "terminate called" / "Fatal Python", keep their logs and a core dump.
#
#   benchmarks/rank_exit.sh SRC SECONDS WORKDIR
#
# SRC: the tinylora source folder to test (e.g. a git worktree's src/, with or without the
# os._exit in cli.entry); WORKDIR: where the backbone, logs and core files go. Inspect a core with
#   gdb -batch -ex "thread apply all bt" $(which python) WORKDIR/core
set -u
SRC=$(realpath "$1"); SECONDS_LEFT=$2; WORK=$3
mkdir -p "$WORK" && cd "$WORK" || exit 1
export PYTHONPATH=$SRC PYTHONFAULTHANDLER=1 TINYLORA_CACHE_DIR=$WORK/cache
ulimit -c unlimited
[ -d backbone ] || python -c "
from tinylora.toy.backbone import PretrainConfig, pretrain
pretrain('backbone', PretrainConfig.quick(steps=30), progress=False)"
end=$(( $(date +%s) + SECONDS_LEFT )); i=0; fail=0
while [ "$(date +%s)" -lt $end ]; do
  i=$((i+1)); rm -rf out
  python -m tinylora eval --model backbone --task arith --task-arg n_test=11 --limit 11 --samples 2 \
    --temperature 1.0 --batch-size 3 --max-new-tokens 24 --device cpu --nproc 2 --out out > last.log 2>&1
  rc=$?
  if [ $rc -ne 0 ] || grep -q "terminate called\|Fatal Python" last.log; then
    fail=$((fail+1)); cp last.log "fail_$i.log"
    echo "run $i rc=$rc FAIL $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  fi
  [ $((i % 10)) -eq 0 ] && echo "run $i fails $fail $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "DONE runs $i fails $fail"
