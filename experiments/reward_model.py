"""Train a reward model on preference pairs: Bradley-Terry on a scalar head over the init run.

  python experiments/reward_model.py --config=configs/reward/tiny.py --workdir=/tmp/jaxllm/rm \\
      --config.init.checkpoint=/tmp/jaxllm/sft

Running again with the same --workdir resumes from its newest checkpoint. The stage:
jaxllm/recipes/reward_model.py.
"""

from jaxllm.recipes import reward_model

if __name__ == "__main__":
  reward_model.main()
