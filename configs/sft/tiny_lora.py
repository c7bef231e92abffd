"""LoRA fine-tuning of the tiny pretrained model on the embedded world's conversations: rank-8
adapters on attention q/k/v/o and the MLP, the pretrained params frozen.

  python experiments/sft.py --config=configs/sft/tiny_lora.py --workdir=/tmp/jaxllm/sft_lora \
      --config.init.checkpoint=/tmp/jaxllm/tiny

Checkpoints hold the adapters only; sample.py, chat.py and evaluate.py merge them into the init
run's params. `:steps=N,rank=R` change the length and the rank.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import sft


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=600, rank=8)
  c = sft.default_config("tiny")
  c.data.source = "world"
  c.lora.rank = args.rank
  c.lora.alpha = 2.0 * args.rank
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.optimizer.lr = 3e-3  # adapters start at zero and take a higher rate than full fine-tuning
  c.optimizer.weight_decay = 0.0
  return c
