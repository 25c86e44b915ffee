#!/bin/bash
# On the GPU machine, from the repository root: run several train.py configurations at once
# (one GPU, 12% of its memory each; XLA compiles on the 16 cores in parallel).
# usage: bash .gpu2/sweep.sh NAME1 'JSON1' NAME2 'JSON2' ...
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl 2>/dev/null || test -d /tmp/site/keras_hub || exit 1
export PYTHONPATH=/tmp/site KERAS_BACKEND=jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.12 PYTHONUNBUFFERED=1
mkdir -p /tmp/g2 /tmp/logs && cp .gpu2/* /tmp/g2/
while [ $# -gt 0 ]; do
    python3 /tmp/g2/train.py "$1" "$2" > "/tmp/logs/$1.log" 2>&1 &
    shift 2
done
wait
grep -h '^{"name"' /tmp/logs/*.log
cat /tmp/logs/*.log > "${OUT:-/tmp}/logs.txt"
