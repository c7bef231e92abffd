"""The whole pipeline in one command: data, tokenizer, pretraining, SFT, reward model, DPO, RL,
evaluation of every stage and a report with plots.

  python experiments/pipeline.py --config=configs/pipeline/tiny.py --workdir=runs/pipeline
  python experiments/pipeline.py --config=configs/pipeline/tiny.py --workdir=runs/pipeline \\
      --config.stages=sft,dpo,eval --config.sft.lora.rank=8        # redo some stages
  python experiments/pipeline.py --config=configs/pipeline/small.py --workdir=DIR      # GPU

Each stage writes its own run directory under WORKDIR (the same files its own script writes:
experiments/pretrain.py, sft.py, reward_model.py, dpo.py, rl.py) and is skipped when complete,
so running the command again resumes where it stopped. Then WORKDIR/report.md and its plots.
See jaxllm/workflow/pipeline.py for what each stage reads and writes.
"""

import pathlib

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.eval import suites
from jaxllm.rl import experiment as rl_experiment
from jaxllm.workflow import pipeline as stages
from jaxllm.workflow import report

HERE = pathlib.Path(__file__).resolve().parent


def script(name: str):
  """experiments/<name>.py as a module (its run function; flags are defined only in __main__)."""
  return config_lib.import_file(HERE / f"{name}.py")


def run(config, workdir):
  trainers = {"pretrain": script("pretrain").run, "sft": script("sft").run,
              "reward": script("reward_model").run, "dpo": script("dpo").run,
              "rl": rl_experiment.run}
  stages.run(config, workdir, trainers, suites.evaluate, script("train_tokenizer").run,
             report.write)


if __name__ == "__main__":
  cli.run_stage(run, "Pipeline config (see configs/pipeline/).")
