"""Knowledge distillation: train a fresh (smaller) student on a frozen teacher run's logits.

  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/distill \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny
  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/student \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny --config.distill.kd_weight=0   # data only

Running again with the same --workdir resumes from its newest checkpoint. The stage:
jaxllm/recipes/distill.py.
"""

from jaxllm.recipes import distill

if __name__ == "__main__":
  distill.main()
