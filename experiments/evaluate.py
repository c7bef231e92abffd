"""Evaluate a trained run: suites over the embedded world and probes, into RUN/eval.json.

  python experiments/evaluate.py --workdir=RUN
  python experiments/evaluate.py --workdir=RUN --config=configs/eval/default.py \\
      --config.suites=lm,qa --config.qa.questions=400 --step=600

A second evaluation of the same checkpoint merges into RUN/eval.json (the suites asked again
are replaced, the others kept); the results of another checkpoint are kept beside it as
RUN/eval_stepN.json. The stage: jaxllm/recipes/evaluate.py.

Field benchmarks (lm-evaluation-harness tasks: hellaswag, gsm8k, your own YAML files) run on the
same run with `python -m jaxllm.eval.harness --model jaxllm --model_args run=RUN --tasks ...`,
whose results go to RUN/lm_eval/ beside eval.json (jaxllm/eval/harness.py).
"""

from jaxllm.recipes import evaluate

if __name__ == "__main__":
  evaluate.main()
