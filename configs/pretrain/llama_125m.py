"""Llama-style 128M model on GPU/TPU: bfloat16 compute, FSDP over all devices, scanned layers.

  python experiments/pretrain.py --config=configs/pretrain/llama_125m.py --workdir=/tmp/jaxllm/llama_125m

Arguments: `--config=configs/pretrain/llama_125m.py:steps=1000,batch=256,seq_len=2048`. Until a
tokenizer trained on real text is configured, data is the synthetic world (byte ids).
"""

from jaxllm import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=10_000, batch=64, seq_len=2048)
  c = config_lib.pretrain_config("llama-125m")
  c.model.dtype = "bfloat16"
  c.model.scan_layers = True
  c.model.remat = "save_dots"
  c.model.attention_impl = "auto"
  c.data.seq_len = args.seq_len
  c.data.num_docs = 200_000
  c.train.num_steps = args.steps
  c.train.batch_size = args.batch
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.optimizer.lr = 6e-4
  c.optimizer.warmup_steps = min(2000, args.steps // 10)
  c.mesh.data = 1
  c.mesh.fsdp = -1
  return c
