"""LoRA fine-tuning of an imported Hugging Face model (Llama, Mistral, Qwen2/3, GPT-2) on GPU/TPU:
bfloat16 compute, FSDP over every device, scanned layers with full remat, rank-16 adapters.

  python experiments/sft.py --config=configs/sft/hf_lora.py --workdir=runs/qwen_lora \\
      --config.init.hf_path=~/models/Qwen2.5-0.5B-Instruct --config.data.source=chats.jsonl
  python experiments/convert.py --workdir=runs/qwen_lora --out=runs/qwen_lora_hf \\
      --dtype=bfloat16

The params are read slice by slice onto the mesh (jaxllm/interop); `--config.init.checkpoint=RUN`
starts from an imported run directory instead. data.source is a JSONL of {"messages": [...]}
records (the embedded world's conversations by default, to try it out); the chat format is the
model's own (ChatML for Qwen, headers for Llama 3) or ChatML added to a base model's vocabulary.
`:steps=N,rank=R,seq_len=L,batch=B` change the length, rank, context and global batch.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import sft


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=1000, rank=16, seq_len=2048, batch=32)
  # The architecture comes from the imported config.json; these are how to run it.
  c = config_lib.on_accelerators(sft.default_config("tiny"), remat="full")
  c.data.source = "world"
  c.data.seq_len = args.seq_len
  c.lora.rank = args.rank
  c.lora.alpha = 2.0 * args.rank
  c.lora.dropout = 0.05
  c.train.num_steps = args.steps
  c.train.batch_size = args.batch
  c.train.log_every = 10
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.optimizer.lr = 2e-4
  c.optimizer.warmup_steps = min(50, args.steps // 10)
  c.optimizer.weight_decay = 0.0
  c.eval.qa_source = ""  # the world's questions say little about a real model; off
  return c
