#!/bin/bash
# The one CUDA session behind the README's "On a CUDA GPU" figures: (A) `stylepress train` on CUDA,
# bf16 autocast against fp32; (B, C) trained teachers in the cyclegan-resnet and animegan2
# architectures, distilled from the reference teacher's sketch style. Run from the repository root
# on a GPU machine with PyTorch (OUT: a folder for the results), with an untracked .dev/ beside it:
#   .dev/whl/        wheels its Python lacks (pydantic, pydantic-core, annotated-types,
#                    typing-inspection, tomli-w, torch-pruning)
#   .dev/data/portraits/{train,val}   the shared portraits
#   .dev/teacher/    runs/cyclegan/teacher's weights.safetensors and arch.json
# Each phase has a time box (SIGINT: the stages keep their checkpoint and best weights).
set -u
DEV=${DEV:-cuda}
export PYTHONUNBUFFERED=1
R=$PWD
exec > >(tee $OUT/log.txt) 2>&1
date -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 1
mkdir -p /tmp/pkg && cp -r stylepress /tmp/pkg/ && for d in train compress export serving benchmarks; do cp -r $d /tmp/pkg/stylepress/$d; done
export PYTHONPATH=/tmp/pkg:/tmp/site; cd /tmp
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0), torch.get_num_threads())"
mkdir -p /tmp/runs/cyclegan && cp -r $R/.dev/teacher /tmp/runs/cyclegan/teacher
DATA=(--set "data.photos=\"$R/.dev/data/portraits/train\"" --set "data.val_photos=\"$R/.dev/data/portraits/val\""
      --set 'data.styles=["sketch"]')
SP="python3 -m stylepress"

echo "== A: train on CUDA, amp on / off"
for amp in true false; do
  s=${EPOCHREALTIME/./}
  timeout -s INT 60 $SP train $R/configs/cyclegan.toml --out /tmp/runs/amp-$amp "${DATA[@]}" --set train.device=\"$DEV\" \
    --set train.amp=$amp --set train.steps=200 --set train.val_every=1000 --set train.log_every=10 \
    --set train.checkpoint_every=1000 2>&1 | tail -n 3
  echo "amp=$amp wall $(( (${EPOCHREALTIME/./} - s) / 1000 )) ms"
  cp /tmp/runs/amp-$amp/teacher/log.jsonl /tmp/runs/train-amp-$amp.jsonl
done

echo "== B, C: family teachers"
for spec in "cyclegan-resnet 2000 180" "animegan2 2500 130"; do
  set -- $spec
  s=${EPOCHREALTIME/./}
  timeout -s INT $3 $SP.benchmarks family-teacher $R/configs/cyclegan.toml --arch $1 --style sketch \
    --out /tmp/runs/cyclegan "${DATA[@]}" --set compress.device=\"$DEV\" --set train.crop=256 \
    --set compress.batch_size=8 --set compress.distill_steps=$2 --set compress.val_every=250 \
    --set compress.log_every=50 --set compress.checkpoint_every=250 2>&1 | tail -n 3
  echo "$1 wall $(( (${EPOCHREALTIME/./} - s) / 1000 )) ms"
done
nvidia-smi --query-gpu=memory.used --format=csv
cd /tmp/runs && rm -f cyclegan/family/*/state.pt cyclegan/family/*/last.safetensors && tar cf - train-amp-*.jsonl cyclegan/family | split -b 15M - $OUT/fam.tar.
ls -la $OUT
