#!/usr/bin/env bash
# The one device-tool command for issue 4 (see bench/RESULTS.md): the throughput benchmark on
# CUDA, then the trainer test suite under the GPU machine's torch (2.11 / Python 3.12) on CPU,
# where resume must be bit-exact. Results go to $OUT (or ./gpu-out).
#   device tool: run(command="bash trainers/bench/gpu_check.sh", carry=[".gpu"], timeout_s=540)
# (bench <= 420 s, tests <= 110 s; the bench writes its report after every case, so a run cut
# short still returns what it measured). The bench includes cvdet_n (framework cvtrain, issue 18):
# trainer images/s against a plain loop of the same model, and its ONNX export run by onnxruntime.
# .gpu/site holds pure-Python jsonschema (+ pyrsistent), which the tests need and that image lacks
# (no package index there). Made here, untracked, once per checkout:
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/site
#   cp -r /usr/lib/python3/dist-packages/{jsonschema,pyrsistent}* .gpu/site/   # from python3-jsonschema
#   find .gpu -name '*.so' -delete       # Python 3.11 builds; pyrsistent falls back to pure Python
set -u
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -d .gpu/site ] && export PYTHONPATH=$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__)'
  python3 -c 'import transformers, onnxruntime; print("transformers", transformers.__version__, "onnxruntime", onnxruntime.__version__)'
  nproc
  # How the CPUs the DataLoader workers share with the training process are laid out.
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|CPU max MHz|L3)'
} 2>&1 | tee "$OUT/env.txt"
# resnet18 once more with the stock DataLoader path instead of the batch ring (fresh shared
# memory per batch, pin-memory thread), for an A/B on the same machine, beside its step
# breakdown (training loader alone, train_step alone).
BENCH_ARGS=${GPU_BENCH_ARGS:---variant resnet18:env.CVTRAIN_BATCH_RING=0}
timeout 420 python3 trainers/bench/gpu_bench.py --out "$OUT/bench.json" --markdown "$OUT/bench.md" $BENCH_ARGS >"$OUT/bench.log" 2>&1
echo "gpu_bench exit $?" | tee -a "$OUT/env.txt"
tail -n 12 "$OUT/bench.log"
CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 timeout 110 python3 -m pytest trainers/tests -q -x -p no:cacheprovider -n 8 -p no:benchmark >"$OUT/pytest.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/env.txt"
tail -n 15 "$OUT/pytest.log"
