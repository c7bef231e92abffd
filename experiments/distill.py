"""Knowledge distillation: train a fresh (smaller) student on a frozen teacher run's logits.

  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/distill \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny
  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/student \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny --config.distill.kd_weight=0   # data only

The loss mixes the forward KL to the teacher at temperature config.distill.temperature (times
T^2) with the data's cross-entropy (jaxllm/objectives/distill.py). The student is
config.model (vocab_size 0: the teacher's); it reads the pretraining text of config.data with
the teacher's tokenizer (copied into WORKDIR). The teacher's params are frozen: placed on the
mesh, no optimizer state, not checkpointed. eval/perplexity is the student's plain perplexity;
eval/kl its KL to the teacher and eval/teacher_nll the teacher's own loss on the same tokens.
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools
import pathlib

import jax

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.data import batching, chat, inputs
from jaxllm.errors import UserError
from jaxllm.inference import runs
from jaxllm.models import Transformer
from jaxllm.objectives import distill
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import loop


def load_teacher(config) -> runs.Run:
  """config.teacher's run (a language model), its step recorded in config.teacher.step."""
  t = config.teacher
  if not (pathlib.Path(t.checkpoint) / "config.json").is_file():
    raise UserError(f"config.teacher.checkpoint={t.checkpoint!r} is not a run directory (it has "
                    "no config.json); give the teacher's run directory, e.g. the --workdir of "
                    "experiments/pretrain.py.")
  teacher = runs.load_run(t.checkpoint, None if t.step < 0 else t.step)
  if runs.is_reward_run(teacher.config):
    raise UserError(f"config.teacher.checkpoint={t.checkpoint!r} is a reward-model run; the "
                    "teacher must be a language model (a pretraining or SFT run).")
  t.step = teacher.step
  return teacher


def run(config, workdir, hooks=()):
  """Loads the teacher, builds the student and the text data, and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  config_lib.validate_distill(config)
  teacher = load_teacher(config)
  tokenizer = teacher.tokenizer
  if jax.process_index() == 0:
    chat.save_pretrained(tokenizer, workdir)
  if config.model.vocab_size == 0:
    config.model.vocab_size = teacher.model.cfg.vocab_size
  inputs.check_vocab(config, tokenizer.vocab_size)
  model_cfg = config_lib.validate(config)
  model = distill.with_teacher(Transformer(model_cfg), teacher.model)
  if config.data.path:  # one text file as a token stream
    train_iter, eval_batches = inputs.stream_train_and_eval(config, tokenizer)
  else:
    train_iter, eval_batches = inputs.train_and_eval(config, workdir, "text",
                                                     batching.text_example(tokenizer))
  loss_fn = functools.partial(distill.distill_loss, temperature=config.distill.temperature,
                              kd_weight=config.distill.kd_weight, z_loss=config.train.z_loss,
                              chunk=config.train.loss_chunk)
  try:
    return loop.train(config, workdir, model, loss_fn, train_iter, eval_batches, hooks=hooks,
                      frozen_params=teacher.params)
  finally:
    train_iter.close()


if __name__ == "__main__":
  cli.run_stage(run, "Config file (see configs/distill/).")
