"""Supervised fine-tuning on conversations: next-token loss on the assistant's tokens only.

  python experiments/sft.py --config=configs/sft/tiny.py --workdir=/tmp/jaxllm/sft \\
      --config.init.checkpoint=/tmp/jaxllm/tiny
  python experiments/sft.py --config=configs/sft/tiny_lora.py --workdir=/tmp/jaxllm/sft_lora \\
      --config.init.checkpoint=/tmp/jaxllm/tiny                      # LoRA adapters only

The init run gives the params (a fresh optimizer state), the model config and the tokenizer
(copied into WORKDIR). Conversations are rendered with the ChatML template and packed with
segment ids, so examples never attend to each other. With config.lora.rank > 0 only the
adapters train and are checkpointed; the init run's params stay frozen (load_run merges them);
config.lora.base_quant="int8" holds them as int8 weights (QLoRA-style; configs/sft/tiny_qlora.py).
Every eval step also answers held-out questions greedily (eval/qa_accuracy).
Running again with the same --workdir resumes from its newest checkpoint.
"""

import functools
import json
import pathlib

from jaxllm import cli
from jaxllm import config as config_lib
from jaxllm.compress import quantize
from jaxllm.data import batching, inputs
from jaxllm.eval import qa
from jaxllm.inference import retrieval, runs
from jaxllm.models import Transformer
from jaxllm.models import lora as lora_lib
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import loop


def _rag_data(config, workdir, tokenizer) -> str:
  """Writes the world's RAG conversations to WORKDIR/rag_sft.jsonl (process 0 first)."""
  path = pathlib.Path(workdir) / "rag_sft.jsonl"
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


def run(config, workdir, hooks=()):
  """Loads the init run, builds the conversation data and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the pretrained run (or Hugging Face model) to fine-tune")
  init = runs.start_from(config, workdir)
  tokenizer = init.tokenizer
  if config.data.source == "world_rag":
    config.data.source = _rag_data(config, workdir, tokenizer)
  model_cfg = config_lib.validate(config)
  lora = lora_lib.LoraConfig.from_config(config.lora)
  train_iter, eval_batches = inputs.train_and_eval(
      config, workdir, "conversations",
      batching.chat_example(tokenizer, config.data.messages_field))
  loss_fn = functools.partial(lm.lm_loss, z_loss=config.train.z_loss,
                              chunk=config.train.loss_chunk)
  evals = qa.training_eval(config, quantize.float_config(model_cfg), tokenizer, lora)
  try:
    if lora is None:  # full fine-tuning: every param trains, starting from the init run's
      return loop.train(config, workdir, Transformer(model_cfg), loss_fn, train_iter,
                        eval_batches, init_params=init.params, hooks=hooks, evals=evals)
    # LoRA: fresh adapters are the trained params; the init run's params stay frozen, as int8
    # with config.lora.base_quant="int8" or when the init run is quantized (QLoRA).
    base_cfg, base = quantize.frozen_base(init.params, model_cfg, config.lora.base_quant)
    model = lora_lib.LoraModel(Transformer(base_cfg, lora=lora))
    return loop.train(config, workdir, model, loss_fn, train_iter, eval_batches, hooks=hooks,
                      frozen_params=base, evals=evals)
  finally:
    train_iter.close()


if __name__ == "__main__":
  cli.run_stage(run, "Config file (see configs/sft/).")
