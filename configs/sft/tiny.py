"""Chat SFT of the tiny pretrained model on the embedded world's conversations (loss on the
assistant's tokens only, packed with segment ids).

  python experiments/sft.py --config=configs/sft/tiny.py --workdir=/tmp/jaxllm/sft \\
      --config.init.checkpoint=/tmp/jaxllm/tiny

`:steps=N` sets the number of steps; the model and tokenizer come from the init run.
"""

from jaxllm import config as config_lib
from jaxllm.recipes import sft


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=600)
  c = sft.default_config("tiny")
  c.data.source = "world"
  c.train.num_steps = args.steps
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  return c
