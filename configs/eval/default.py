"""Every evaluation suite and probe on a run (jaxllm/eval/suites.py), written to RUN/eval.json.

  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.suites=lm --config.lm.texts='held_out/*.jsonl'      # perplexity of other text
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.reward.model=RM_RUN                                 # + reward-model score

`:quick=true` asks fewer questions (the pipeline's tiny config uses it).
"""

from jaxllm import config as config_lib
from jaxllm.recipes import evaluate


def get_config(arg=None):
  args = config_lib.parse_arg(arg, quick=False)
  c = evaluate.default_config()
  if args.quick:
    c.qa.questions = 100
    c.math.questions = 100
    c.math.samples = 4
    c.tool.questions = 50
    c.rag.questions = 50
    c.memorization.documents = 100
    c.reward.pairs = 200
  return c
