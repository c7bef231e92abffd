"""Evaluate a trained run: suites over the embedded world and probes, into RUN/eval.json.

  python experiments/evaluate.py --workdir=RUN
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.suites=lm,qa --config.qa.questions=400 --step=600

The stage: jaxllm/recipes/evaluate.py.
"""

from jaxllm.recipes import evaluate

if __name__ == "__main__":
  evaluate.main()
