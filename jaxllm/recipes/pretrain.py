"""Pretraining: next-token prediction on text (or masked LM with a bidirectional model), from
fresh params or continued from a run (domain adaptation).

  python experiments/pretrain.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/tiny

`run` reads config.data (the world, local files, a tfds: name, or one text file as a token
stream), trains or reuses a tokenizer, and hands the loss (jaxllm/objectives/lm.py, or
jaxllm/objectives/mlm.py with an `mlm` section) to the one training loop.
"""

import functools

import ml_collections

from jaxllm import cli, rundir, runs
from jaxllm import config as config_lib
from jaxllm.data import batching, inputs
from jaxllm.errors import ConfigError
from jaxllm.models import Transformer
from jaxllm.objectives import lm, mlm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import aot, loop


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Every field a pretraining run reads, with defaults for the named model size."""
  return config_lib.base_config(size, "pretrain")


def accelerator_config(size: str, arg: str | None, seq_len: int,
                       batch: int = 64) -> ml_collections.ConfigDict:
  """Pretraining on GPU/TPU: bfloat16 compute, FSDP over all devices, scanned layers, remat.

  `arg` takes steps, batch and seq_len, e.g. 'steps=1000,batch=256,seq_len=1024'.
  """
  args = config_lib.parse_arg(arg, steps=10_000, batch=batch, seq_len=seq_len)
  c = config_lib.on_accelerators(default_config(size), remat="save_dots")
  c.data.seq_len = args.seq_len
  c.data.tokenizer_vocab_size = 32768
  c.data.num_workers = 4
  c.train.num_steps = args.steps
  c.train.batch_size = args.batch
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.optimizer.lr = 6e-4
  c.optimizer.warmup_steps = min(2000, args.steps // 10)
  return c


def mlm_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Masked-LM (BERT / RoBERTa) pretraining: a bidirectional model and the masking rates
  (jaxllm/objectives/mlm.py); the run's tokenizer gets the mask token as a special token."""
  c = default_config(size)
  c.model.causal = False
  c.benchmark.sampler = False  # experiments/benchmark.py: nothing to sample from a masked LM
  c.mlm = ml_collections.ConfigDict()
  c.mlm.mask_rate = 0.15  # of the eligible tokens (real, not special), chosen for the loss
  c.mlm.mask_token_prob = 0.8  # of the chosen: replaced by mask_token
  c.mlm.random_token_prob = 0.1  # of the chosen: replaced by a random regular token
  c.mlm.mask_token = "<|mask|>"  # trained into the tokenizer, or added to a given one
  c.mlm.eval_seed = 0  # eval masks with this fixed key: eval numbers compare across steps
  return c


def validate_mlm(config: ml_collections.ConfigDict) -> None:
  """An mlm section needs a bidirectional model, and a bidirectional model an mlm section."""
  m, causal = config.get("mlm"), config.model.get("causal", True)
  if m is None:
    if not causal:
      raise ConfigError("config.model.causal=False (bidirectional attention) is only trained by "
                        "masked LM, which needs a config.mlm section; set config.model.causal="
                        "True or start from jaxllm.recipes.pretrain.mlm_config (configs/pretrain/"
                        "mlm_tiny.py).")
    return
  if causal:
    raise ConfigError("config.mlm (masked LM) needs config.model.causal=False: a causal model "
                      "cannot see the tokens after a masked one; set --config.model.causal=False.")
  for name in ("mask_rate", "mask_token_prob", "random_token_prob"):
    if not 0.0 <= m[name] <= 1.0:
      raise ConfigError(f"config.mlm.{name}={m[name]} must be in [0, 1].")
  if m.mask_rate == 0.0:
    raise ConfigError("config.mlm.mask_rate=0.0 chooses no token to predict; set it in (0, 1] "
                      "(BERT: 0.15).")
  if m.mask_token_prob + m.random_token_prob > 1.0:
    raise ConfigError(f"config.mlm.mask_token_prob={m.mask_token_prob} + config.mlm."
                      f"random_token_prob={m.random_token_prob} exceeds 1; the rest of the "
                      "chosen tokens stay unchanged (BERT: 0.8 + 0.1).")
  if not m.mask_token:
    raise ConfigError("config.mlm.mask_token is empty; name the special token, e.g. '<|mask|>'.")


def validate(config: ml_collections.ConfigDict):
  """The pretraining fields (and the base ones); returns the model config."""
  validate_mlm(config)
  return config_lib.validate(config)


def loss_fn(config, tokenizer=None):
  """Next-token prediction, or masked LM with an mlm section (its masking needs `tokenizer`)."""
  if "mlm" in config:
    return functools.partial(mlm.mlm_loss, masking=mlm.masking(config.mlm, tokenizer),
                             z_loss=config.train.z_loss, chunk=config.train.loss_chunk)
  return functools.partial(lm.lm_loss, z_loss=config.train.z_loss,
                           chunk=config.train.loss_chunk)


def step_spec(config) -> aot.StepSpec:
  """The train step without data (experiments/compile.py)."""
  if "mlm" in config:
    raise ConfigError("experiments/compile.py compiles causal-LM pretraining; a masked-LM config "
                      "(an mlm section) needs its tokenizer to build the loss.")
  return aot.StepSpec(Transformer(validate(config)), loss_fn(config),
                      batching.row_layout(config.data.seq_len))


@rundir.claims_workdir
def run(config, workdir, hooks=()):
  """Builds data, tokenizer, model and loss from `config` and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  init = runs.start_from(config, workdir)  # continued pretraining: its params and tokenizer
  validate_mlm(config)  # before the data and tokenizer are made
  specials = (config.mlm.mask_token,) if "mlm" in config else ()  # masked LM: the mask token
  if config.data.path:  # one text file as a token stream (nanoGPT's data path)
    tokenizer = init.tokenizer if init else inputs.stream_tokenizer(config.data, workdir)
    make_inputs = lambda: inputs.stream_train_and_eval(config, tokenizer)
  else:
    train_sources, weights = inputs.open_sources(config.data, "text", "train", workdir)
    tokenizer = init.tokenizer if init else inputs.tokenizer(config.data, workdir, train_sources,
                                                             specials)
    make_inputs = lambda: inputs.train_and_eval(
        config, workdir, "text", batching.text_example(tokenizer), train_sources, weights)
  tokenizer.add_special_tokens(specials)  # a given or inherited tokenizer may lack them
  inputs.check_vocab(config, tokenizer.vocab_size)
  model_cfg = validate(config)
  train_iter, eval_batches = make_inputs()
  try:
    return loop.train(config, workdir, Transformer(model_cfg), loss_fn(config, tokenizer),
                      train_iter, eval_batches,
                      init_params=init.params if init else None, hooks=hooks)
  finally:
    train_iter.close()


def main():
  """python -m jaxllm.recipes.pretrain --config=FILE --workdir=DIR (experiments/pretrain.py)."""
  cli.run_stage(run, "Config file (see configs/pretrain/).")


if __name__ == "__main__":
  main()
