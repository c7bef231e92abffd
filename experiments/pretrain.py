"""Pretrain a decoder LM with next-token prediction (or a bidirectional one with masked LM).

  python experiments/pretrain.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/tiny
  python experiments/pretrain.py --config=configs/pretrain/mlm_tiny.py --workdir=/tmp/jaxllm/mlm

Any config field can be overridden: --config.train.num_steps=50 --config.model.num_layers=2.
--config.init.checkpoint=RUN continues pretraining from RUN's params with its model config and
tokenizer (domain adaptation; configs/pretrain/adapt_tiny.py).
A config with an `mlm` section (jaxllm.config.mlm_config) trains with the masked-LM loss
(jaxllm/objectives/mlm.py); its tokenizer holds config.mlm.mask_token.
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import batching, inputs
from jaxllm.inference import runs
from jaxllm.models import Transformer
from jaxllm.objectives import lm, mlm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import loop


def run(config, workdir, hooks=()):
  """Builds data, tokenizer, model and loss from `config` and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  init = runs.start_from(config, workdir)  # continued pretraining: its params and tokenizer
  config_lib.validate_mlm(config)  # before the data and tokenizer are made
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
  model_cfg = config_lib.validate(config)
  train_iter, eval_batches = make_inputs()
  loss_fn = functools.partial(lm.lm_loss, z_loss=config.train.z_loss,
                              chunk=config.train.loss_chunk)
  if "mlm" in config:
    loss_fn = functools.partial(mlm.mlm_loss, masking=mlm.masking(config.mlm, tokenizer),
                                z_loss=config.train.z_loss, chunk=config.train.loss_chunk)
  try:
    return loop.train(config, workdir, Transformer(model_cfg), loss_fn, train_iter, eval_batches,
                      init_params=init.params if init else None, hooks=hooks)
  finally:
    train_iter.close()


if __name__ == "__main__":
  cli.run_stage(run, "Config file (see configs/pretrain/).")
