"""Every stage on the embedded world with the tiny model, on CPU in minutes.

  python experiments/pipeline.py --config=configs/pipeline/tiny.py --workdir=runs/pipeline

crawl + cleaning -> BPE tokenizer -> pretrain -> SFT -> reward model -> DPO -> GRPO -> eval of
every stage -> WORKDIR/report.md. Stages are the stage configs of configs/*/ (their fields
override as usual: --config.sft.train.num_steps=200); --config.stages=sft,dpo runs some of them
(the ones they start from must be complete in WORKDIR). `:steps=N` caps every training stage
at N steps with small eval sets (a smoke test); `:quick=false` asks the full eval question sets.

Data: the world's prose (biographies, town pages, price lists) goes through the crawl and
FineWeb's cleaning steps; its math (drills, worked problems) is kept apart as a curated math set
and mixed in at config.math_weight, as math-specific datasets are, since web filters drop such
pages (Gopher's "80% of words contain a letter" rule drops every drill; the C4 and FineWeb line
rules strip "Solution:" lines). Thresholds for the templated prose: the letter rule is 30%, two
stop words are one, and the C4 and FineWeb quality steps are off; URL, HTML, language,
repetition, PII and both dedups run as shipped.
"""

import pathlib

from jaxllm import config as config_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1]


def load(name: str, arg: str | None = None):
  return config_lib.load_config_file(CONFIGS / name, arg)


def get_config(arg=None):
  args = config_lib.parse_arg(arg, steps=0, quick=True)
  c = config_lib.ml_collections.ConfigDict()
  c.stages = "all"  # or comma-separated: data,tokenizer,pretrain,sft,reward,dpo,rl,eval
  c.world_seed = 0
  c.init_from = {"sft": "pretrain", "reward": "sft", "dpo": "sft", "rl": "dpo"}
  c.crawl = {"min_words": 80, "junk_fraction": 0.25}
  # Share of pretraining batches drawn from the math set (drills and worked problems), the rest
  # from the cleaned crawl of the world's prose.
  c.math_weight = 0.5
  # A multi-process job (every stage's processes): --config.distributed.initialize=True on
  # every host (docs/tpu.md); process 0 alone makes the data and the tokenizer and writes the
  # shared files.
  c.distributed = config_lib.distributed_config()
  # Weights & Biases (off by default): --config.logging.wandb.enabled=True puts every training
  # stage in one W&B group (the directory's name unless .group is set), each run named
  # GROUP-STAGE, and a GROUP-report run with the report's plots and every stage's eval numbers.
  c.logging = config_lib.logging_config()

  c.clean = load("data/clean.py")
  c.clean.steps = ("url", "html", "language", "gopher_repetition", "gopher_quality", "pii")
  c.clean.gopher_quality.max_non_alpha_words_ratio = 0.3
  c.clean.gopher_quality.min_stop_words = 1
  c.clean.gopher_quality.min_avg_word_length = 2.0
  c.clean.num_workers = 1

  c.tokenizer = load("tokenizer/bpe.py", "vocab_size=1024")
  c.tokenizer.max_digits = 1  # one token per digit: sums are learned carry by carry
  c.pretrain = load("pretrain/tiny.py")
  c.sft = load("sft/tiny.py", "steps=400")
  c.reward = load("reward/tiny.py", "steps=200")
  c.dpo = load("dpo/tiny.py", "steps=200")
  c.rl = load("rl/grpo_tiny.py", "steps=40")
  for stage in ("sft", "reward", "dpo", "rl"):
    c[stage].train.eval_at_start = True  # the curves start from the model the stage got
  # Half of SFT's replies with steps give only the final answer, as hurried annotators write;
  # DPO's pairs (chosen: the worked reply) then teach showing the working (0 is the ablation,
  # docs/benchmarks.md).
  c.sft.data.world_sizes.sft_no_steps_fraction = 0.5
  c.sft.data.text_weight = 0.3  # of SFT batches: pretraining text (pages, math), against forgetting
  c.rl.optimizer.lr = 1e-4
  c.rl.rl.oversample = 2  # DAPO dynamic sampling: refill the batch with groups that carry signal
  c.eval = load("eval/default.py", f"quick={args.quick}")
  if args.steps:  # a smoke test: every stage N steps, small eval sets
    for stage in ("pretrain", "sft", "reward", "dpo", "rl"):
      t = c[stage].train
      t.num_steps = args.steps
      t.eval_every = t.checkpoint_every = args.steps
      t.log_every = max(1, min(t.log_every, args.steps // 2))
      t.eval_batches = 1
      if "eval" in c[stage] and c[stage].eval.qa_questions:
        c[stage].eval.qa_questions = 8
        c[stage].eval.max_new_tokens = 16
    c.rl.eval.pass_samples = 4
    c.rl.rl.max_new_tokens = 24
    e = c.eval
    e.qa.questions = e.math.questions = e.rag.questions = e.memorization.documents = 8
    e.refusal.questions = 8
    e.math.samples, e.tool.questions, e.reward.pairs = 4, 2, 16
    e.max_new_tokens = 16
  return c
