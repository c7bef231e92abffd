"""The pipeline with a larger model and more of everything, for one GPU (or a TPU host).

  python experiments/pipeline.py --config=configs/pipeline/small.py --workdir=DIR

The world is generated at 10x the default sizes (more pages, conversations, preference pairs
and RL prompts); the model is Llama-style with 8 layers, width 512 (about 25M parameters with a
4096 vocabulary), bfloat16 compute, trained on sequences of 512 tokens. Stages and their order
are those of configs/pipeline/tiny.py; every field overrides the same way. Step counts are
starting points for an accelerator, not tuned results.
"""

import pathlib

from jaxllm import config as config_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1]
MODEL = {"num_layers": 8, "d_model": 512, "num_heads": 8, "num_kv_heads": 4, "mlp_dim": 1536,
         "vocab_size": 4096, "max_seq_len": 512, "dtype": "bfloat16"}
WORLD = {"sft": 20_000, "preferences": 10_000, "rl": 10_000, "kb_questions": 5_000}


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=0)
  c = config_lib.load_config_file(CONFIGS / "pipeline" / "tiny.py",
                                  f"steps={args.steps},quick=false")
  c.tokenizer.vocab_size = MODEL["vocab_size"]
  c.clean.num_workers = 0  # all cores
  for key, value in MODEL.items():
    c.pretrain.model[key] = value
  c.pretrain.data.seq_len = 512
  for stage in ("pretrain", "sft", "reward", "dpo", "rl"):
    c[stage].data.world_sizes = dict(WORLD)
    c[stage].model.dtype = "bfloat16"
  steps = {"pretrain": 5000, "sft": 2000, "reward": 1000, "dpo": 1000, "rl": 200}
  batch = {"pretrain": 64, "sft": 64, "reward": 64, "dpo": 64, "rl": 256}
  for stage, n in steps.items():
    t = c[stage].train
    t.num_steps = args.steps or n
    t.batch_size = batch[stage]
    t.eval_every = t.checkpoint_every = max(1, t.num_steps // 5)
  c.rl.rl.group_size = 8
  c.pretrain.optimizer.lr = 1e-3
  return c
