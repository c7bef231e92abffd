#!/usr/bin/env bash
# Compiles every shipped accelerator config for three TPU slices (experiments/compile.py) and
# writes one JSON report each into docs/tpu/compiled/; docs/tpu.md's tables are made from them
# with `python experiments/compile.py --table='docs/tpu/compiled/*.json'`. Needs libtpu
# (pip install -e '.[tpu]'); no TPU. Run from the repository root.
set -uo pipefail
out=docs/tpu/compiled
mkdir -p "$out"
# v5e-8 (one host), v5e-256 (a full v5e pod), v5p-128 (64 chips); the global batch grows with the
# slice so that every chip gets rows.
slices=("v5e:2x4 64" "v5e:16x16 256" "v5p:4x4x4 64")
if [ $# -gt 0 ]; then slices=("$@"); fi  # e.g. "v5e:2x4 64": one slice again
run() {  # name topology args...
  local name=$1 topo=$2; shift 2
  local file="$out/${name}_${topo/:/-}.json"
  echo "== $name on $topo"
  python experiments/compile.py --topology="$topo" --out="$file" "$@" 2>&1 \
    | grep -v -e "^WARNING" -e "^E0000" -e "^I0000" -e "^W0000" -e "Source Location" \
              -e "libtpu_init_utils" -e "Failed to find host bounds" -e "^===" | tail -12
}
lora8b="configs/sft/hf_lora.py"
dpo_tpu=(--config.model.dtype=bfloat16 --config.model.scan_layers=True --config.model.remat=full
         --config.mesh.data=1 --config.mesh.fsdp=-1 --config.data.seq_len=2048)
for slice in "${slices[@]}"; do
  read -r topo batch <<<"$slice"
  for size in gpt2_124m llama_125m llama_350m llama_1b llama3_8b; do
    run "pretrain-$size" "$topo" --config="configs/pretrain/$size.py:batch=$batch"
  done
  sft_batch=$([ "$topo" = "v5e:2x4" ] && echo 8 || echo "$batch")
  run "sft-lora-llama3_8b" "$topo" --config="$lora8b:batch=$sft_batch" \
      --model=configs/pretrain/llama3_8b.py --nosampler
  run "sft-full-llama3_8b" "$topo" --config="$lora8b:batch=$sft_batch,rank=0" \
      --model=configs/pretrain/llama3_8b.py --nosampler
  run "dpo-llama_1b" "$topo" --config=configs/dpo/tiny.py --model=configs/pretrain/llama_1b.py \
      "${dpo_tpu[@]}" --config.train.batch_size="$batch" --nosampler
  run "grpo-llama_1b" "$topo" --config=configs/rl/grpo_tiny.py \
      --model=configs/pretrain/llama_1b.py "${dpo_tpu[@]}" --config.data.seq_len=1024 \
      --config.train.batch_size="$batch" --nosampler
done
