"""The whole pipeline in one command: data, tokenizer, pretraining, SFT, reward model, DPO, RL,
evaluation of every stage and a report with plots.

  python experiments/pipeline.py --config=configs/pipeline/tiny.py --workdir=runs/pipeline
  python experiments/pipeline.py --config=configs/pipeline/tiny.py --workdir=runs/pipeline \\
      --config.stages=sft,dpo,eval --config.sft.lora.rank=8        # redo some stages
  python experiments/pipeline.py --config=configs/pipeline/small.py --workdir=DIR      # GPU

Each stage writes its own run directory under WORKDIR (the same files its own script writes)
and is skipped when complete, so running the command again resumes where it stopped. Then
WORKDIR/report.md and its plots. What each stage reads and writes: jaxllm/workflow/pipeline.py.
"""

from jaxllm.workflow import pipeline

if __name__ == "__main__":
  pipeline.main()
