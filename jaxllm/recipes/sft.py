"""Supervised fine-tuning on conversations: next-token loss on the assistant's tokens only, full
or LoRA (QLoRA-style over an int8 base), from a pretrained run or a Hugging Face model.

  python experiments/sft.py --config=configs/sft/tiny.py --workdir=/tmp/jaxllm/sft \\
      --config.init.checkpoint=/tmp/jaxllm/tiny

The init run gives the params (a fresh optimizer state), the model config and the tokenizer
(copied into WORKDIR). Conversations are rendered with the ChatML template and packed with
segment ids, so examples never attend to each other. With config.lora.rank > 0 only the
adapters train and are checkpointed; the init run's params stay frozen (load_run merges them);
config.lora.base_quant="int8" holds them as int8 weights (QLoRA-style; configs/sft/tiny_qlora.py).
Every eval step also answers held-out questions greedily (eval/qa_accuracy).
"""

import functools
import json

import ml_collections

from jaxllm import cli, rundir, runs, storage
from jaxllm import config as config_lib
from jaxllm.compress import quantize
from jaxllm.data import batching, inputs
from jaxllm.errors import ConfigError
from jaxllm.eval import qa
from jaxllm.inference import retrieval
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import aot, loop

# The progress line's stage keys (jaxllm/train/loop.py adds loss, gradient norm, tok/s, ...).
PROGRESS = (("eval/qa_accuracy", "qa acc {:.3f}"),)


def default_config(size: str = "tiny", stage: str = "sft") -> ml_collections.ConfigDict:
  """Supervised fine-tuning on conversations: the base fields, chat data, RAG data, LoRA and
  the held-out QA eval (the reward-model, DPO and RL configs build on it with their `stage`)."""
  c = config_lib.base_config(size, stage)
  c.data.seq_len = 256
  # "world" reads the world's SFT conversations; "world_rag" builds retrieval-augmented ones
  # (jaxllm.inference.retrieval.world_rag_conversations) into WORKDIR/rag_sft.jsonl.
  c.data.messages_field = "messages"
  c.data.rag = ml_collections.ConfigDict()
  c.data.rag.other_worlds = 12  # freshly generated worlds whose facts must be read, not recalled
  c.data.rag.k = 3  # passages per question
  c.data.rag.budget_tokens = 384  # passages + question, in tokens
  # Pretraining text mixed into the training batches against forgetting (loss on every token):
  # a glob of text records, drawn at text_weight of the mixture ("": conversations only).
  c.data.text_source = ""
  c.data.text_weight = 0.0
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 20
  # LoRA (jaxllm/models/lora.py): rank 0 fine-tunes every parameter.
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0
  c.lora.alpha = 16.0
  c.lora.dropout = 0.0
  c.lora.targets = lora_lib.DEFAULT_TARGETS  # regex over layer paths, e.g. 'layer_0/attn/q'
  c.lora.rslora = False  # scale alpha / sqrt(rank) instead of alpha / rank
  # "int8": the frozen base is held as int8 weights (QLoRA-style, jaxllm/compress/quantize.py);
  # a quantized init run (experiments/quantize.py) is an int8 base whatever this says.
  c.lora.base_quant = "none"
  # Greedy answers to held-out questions at every eval step (jaxllm/eval/qa.py).
  c.eval = ml_collections.ConfigDict()
  c.eval.qa_source = "world"  # "world": the world's eval SFT conversations; a .jsonl; "" = off
  c.eval.qa_questions = 200  # the first N
  c.eval.max_new_tokens = 96
  c.eval.batch_size = 64
  return c


def validate(config: ml_collections.ConfigDict):
  """The fine-tuning fields (LoRA's are checked by LoraConfig) and the base ones; returns the
  model config."""
  lora_lib.LoraConfig.from_config(config.lora)
  w = config.data.text_weight
  if not 0 <= w < 1 or (w > 0) != bool(config.data.text_source):
    raise ConfigError(f"config.data.text_weight={w} with config.data.text_source="
                      f"{config.data.text_source!r}: give both (a weight in (0, 1) and a glob of "
                      "text records) or neither.")
  return config_lib.validate(config)


def _rag_data(config, workdir, tokenizer) -> str:
  """Writes the world's RAG conversations to WORKDIR/rag_sft.jsonl (process 0 first; for a
  gs:// WORKDIR in its local folder, where the data readers open it)."""
  path = storage.local_folder(workdir) / "rag_sft.jsonl"
  rag = config.data.rag

  def write():
    path.parent.mkdir(parents=True, exist_ok=True)
    records = retrieval.world_rag_conversations(tokenizer, config.data.world_seed,
                                                rag.other_worlds, rag.k, rag.budget_tokens)
    with open(path, "w", encoding="utf-8") as f:
      for i, r in enumerate(records):
        f.write(json.dumps({"messages": r["messages"], "id": f"rag-{i}"}) + "\n")
  mesh_lib.process_zero_first(lambda: not path.exists(), write, "RAG conversations")
  return str(path)


def train_data(config, workdir, tokenizer):
  """(train iterator, eval batches): the conversations, with config.data.text_weight of the
  batches drawn from the text records of config.data.text_source (loss on every token); the
  eval batches are conversations only."""
  train_sources, weights = inputs.open_sources(config.data, "conversations", "train", workdir)
  if config.data.text_source:
    text_data = ml_collections.ConfigDict(config.data.to_dict())
    text_data.source = config.data.text_source
    text_sources, _ = inputs.open_sources(text_data, "text", "train", workdir)
    w, total = config.data.text_weight, sum(weights)
    weights = tuple(x / total * (1 - w) for x in weights) + tuple(
        w / len(text_sources) for _ in text_sources)
    train_sources = train_sources + text_sources
  return inputs.train_and_eval(
      config, workdir, "conversations",
      batching.chat_or_text_example(tokenizer, config.data.messages_field), train_sources,
      weights)


def loss_fn(config):
  return functools.partial(lm.lm_loss, z_loss=config.train.z_loss, chunk=config.train.loss_chunk)


def lora_model(config, base_cfg) -> lora_lib.LoraModel:
  """The adapters over a frozen base of config `base_cfg` (int8 for QLoRA)."""
  return lora_lib.LoraModel(Transformer(base_cfg, lora=lora_lib.LoraConfig.from_config(
      config.lora)))


def step_spec(config) -> aot.StepSpec:
  """The train step without data (experiments/compile.py): full, LoRA or QLoRA
  (config.lora.base_quant='int8')."""
  model_cfg = validate(config)
  layout = batching.row_layout(config.data.seq_len)
  if not config.lora.rank:
    return aot.StepSpec(Transformer(model_cfg), loss_fn(config), layout)
  base_cfg = (quantize.quantized_config(model_cfg) if config.lora.base_quant == "int8"
              else model_cfg)
  return aot.StepSpec(lora_model(config, base_cfg), loss_fn(config), layout, frozen=True,
                      lora=True)


@rundir.claims_workdir
def run(config, workdir, hooks=()):
  """Loads the init run, builds the conversation data and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the pretrained run (or Hugging Face model) to fine-tune")
  init = runs.start_from(config, workdir)
  tokenizer = init.tokenizer
  if config.data.source == "world_rag":
    config.data.source = _rag_data(config, workdir, tokenizer)
  model_cfg = validate(config)
  lora = lora_lib.LoraConfig.from_config(config.lora)
  train_iter, eval_batches = train_data(config, workdir, tokenizer)
  evals = qa.training_eval(config, quantize.float_config(model_cfg), tokenizer, lora)
  try:
    if lora is None:  # full fine-tuning: every param trains, starting from the init run's
      return loop.train(config, workdir, Transformer(model_cfg), loss_fn(config), train_iter,
                        eval_batches, init_params=init.params, hooks=hooks, evals=evals,
                        progress=PROGRESS)
    # LoRA: fresh adapters are the trained params; the init run's params stay frozen, as int8
    # with config.lora.base_quant="int8" or when the init run is quantized (QLoRA).
    base_cfg, base = quantize.frozen_base(init.params, model_cfg, config.lora.base_quant)
    return loop.train(config, workdir, lora_model(config, base_cfg), loss_fn(config), train_iter,
                      eval_batches, hooks=hooks, frozen_params=base, evals=evals,
                      progress=PROGRESS)
  finally:
    train_iter.close()


def main():
  """python -m jaxllm.recipes.sft --config=FILE --workdir=DIR (experiments/sft.py)."""
  cli.run_stage(run, "Config file (see configs/sft/).")


if __name__ == "__main__":
  main()
