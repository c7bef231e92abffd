"""Stage recipes: one module per stage, each with the same parts.

  default_config(...)   every field the stage reads, with defaults (config files start from it)
  validate(config)      the stage's checks, before anything is loaded (ConfigError names the field)
  run(config, workdir)  the stage: builds data, model and loss and hands them to the one training
                        loop (jaxllm/train/loop.py), or does its one job (tokenizer, cleaning,
                        quantize, evaluate)
  main()                its command line (experiments/<script>.py; python -m jaxllm.recipes.<name>)

  pretrain      next-token (or masked-LM) pretraining; continued pretraining from a run
  sft           chat SFT, full or LoRA / QLoRA
  reward_model  Bradley-Terry reward model on preference pairs
  dpo           DPO, cDPO, DPOP, IPO, SimPO, ORPO (+ RPO), full or LoRA
  rl            GRPO / Dr. GRPO / RLOO, PPO, RLHF
  distill       a student on a frozen teacher's logits
  prune         magnitude pruning and a recovery fine-tune
  quantize      int8 weight-only copy of a run
  tokenizer     tokenizer training
  prepare_data  FineWeb-style cleaning
  evaluate      eval suites on a run -> RUN/eval.json
"""
