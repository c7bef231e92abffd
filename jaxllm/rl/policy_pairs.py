"""On-policy preference pairs: the policy's own replies, checked by a verifier, right paired
against wrong.

For each question (a conversation {"messages", "answer"}, e.g. the world's training SFT
questions) the policy samples `samples` replies at `temperature`; a verifier (default
jaxllm/data/answers.py's `score`: "The answer is X." matched, or "I don't know." when the world
does not say) marks them right or wrong, and one right reply is paired against one wrong one. A
question with no right sample pairs the reference reply against a wrong sample when
`gold_fallback` is set (the record's assistant turn); one with no wrong sample gives no pair.
Pairs from the model's own distribution are what online / iterative DPO and Tulu 3's preference
data use: the rejected replies are the mistakes this model makes, not someone else's.
"""

import json
import os
import pathlib
import random
import time
from collections.abc import Callable, Sequence

from jaxllm import storage
from jaxllm.data import answers, readers, world
from jaxllm.errors import ConfigError
from jaxllm.eval import qa
from jaxllm.inference.sampler import Sampler
from jaxllm.parallel import mesh as mesh_lib


def sample_pairs(sampler, tokenizer, records: Sequence[dict], *, samples: int = 4,
                 temperature: float = 1.0, max_new_tokens: int = 96, batch_size: int = 64,
                 seed: int = 0, gold_fallback: bool = True,
                 verify: Callable[[str, str], float] = answers.score) -> tuple[list[dict], dict]:
  """(pairs {"prompt": messages, "chosen", "rejected", "meta"}, summary counts)."""
  if samples < 2 and not gold_fallback:
    raise ValueError("on-policy pairs need samples >= 2, or gold_fallback with samples >= 1.")
  parsed = [qa.question_and_answer(r) for r in records]
  conversations = [messages for messages, _, _ in parsed for _ in range(samples)]
  replies = qa.reply_to(sampler, tokenizer, conversations, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, temperature=temperature, seed=seed)
  rng = random.Random(seed)
  pairs = []
  counts = {"questions": len(records), "samples": len(replies), "right_samples": 0,
            "all_right": 0, "none_right": 0, "gold_chosen": 0, "pairs": 0}
  for i, (record, (messages, answer, kind)) in enumerate(zip(records, parsed)):
    mine = replies[i * samples:(i + 1) * samples]
    right = [r for r in mine if verify(r, answer) > 0]
    wrong = [r for r in mine if verify(r, answer) <= 0]
    counts["right_samples"] += len(right)
    counts["all_right"] += not wrong
    counts["none_right"] += not right
    gold = [m["content"] for m in record["messages"][len(messages):] if m["role"] == "assistant"]
    if not wrong:
      continue
    if right:
      chosen, source = rng.choice(right), "sample"
    elif gold_fallback and gold:
      chosen, source = gold[0], "reference"
      counts["gold_chosen"] += 1
    else:
      continue
    pairs.append({"prompt": messages, "chosen": chosen, "rejected": rng.choice(wrong),
                  "meta": {"answer": answer, "kind": kind, "chosen_from": source}})
  counts["pairs"] = len(pairs)
  counts["sample_accuracy"] = counts["right_samples"] / max(len(replies), 1)
  return pairs, counts


def as_question(record: dict) -> dict:
  """{"messages", "answer"} (a conversation) or {"prompt", "answer"} (an RL prompt) -> the
  conversation form `sample_pairs` reads."""
  if "messages" in record or "prompt" not in record:
    return record
  return dict(record, messages=[{"role": "user", "content": record["prompt"]}])


def _questions(c, world_seed: int) -> list[dict]:
  """config.data.on_policy.source: "world" (the world's training SFT questions), "world_rl"
  (its training RL prompts: word problems, many harder than SFT's) or a .jsonl of either form."""
  if c.source in ("world", "world_rl"):
    records = world.generate(world_seed)["train"]["sft" if c.source == "world" else "rl"]
  else:
    records = [obj for _, obj in readers.iter_jsonl(c.source, readers.ReadCounts())]
  if not records:
    raise ConfigError(f"config.data.on_policy.source={c.source!r} holds no questions.")
  return [as_question(r) for r in records[:c.questions]]


def prepare_for_run(config, workdir, init) -> None:
  """With config.data.on_policy.samples > 0: samples pairs from the init run into
  WORKDIR/on_policy/train.jsonl (once; a resumed run reads the file) and points
  config.data.source at it. Eval pairs stay the world's held-out pairs with true labels
  (WORKDIR/on_policy/eval.jsonl), unless config.data.eval_input names others."""
  c = config.data.on_policy
  if c.samples <= 0:
    return
  directory = storage.local_folder(workdir) / "on_policy"  # read by the data readers
  train, held_out = directory / "train.jsonl", directory / "eval.jsonl"

  def write():
    directory.mkdir(parents=True, exist_ok=True)
    smp = Sampler(init.model, init.params, init.tokenizer.pad_id,
                  vocab_limit=init.tokenizer.vocab_size)
    start = time.perf_counter()
    pairs, counts = sample_pairs(
        smp, init.tokenizer, _questions(c, config.data.world_seed), samples=c.samples,
        temperature=c.temperature, max_new_tokens=c.max_new_tokens, batch_size=c.batch_size,
        seed=config.seed, gold_fallback=c.gold_fallback)
    print(f"on-policy pairs: {counts['pairs']:,} from {counts['questions']:,} questions x "
          f"{c.samples} samples in {time.perf_counter() - start:.0f} s (sample accuracy "
          f"{counts['sample_accuracy']:.3f}; {counts['all_right']} questions all right, "
          f"{counts['none_right']} none right, {counts['gold_chosen']} with the reference "
          "reply as chosen)", flush=True)
    _write_jsonl(train, [dict(p, id=f"on-policy-{i}") for i, p in enumerate(pairs)])
    (directory / "summary.json").write_text(json.dumps(counts, indent=1) + "\n")
    if config.data.source == "world" and not config.data.eval_input:
      _write_jsonl(held_out, world.generate(config.data.world_seed)["eval"]["preferences"])
  mesh_lib.process_zero_first(lambda: not train.exists(), write, "on-policy pairs")
  if not config.data.eval_input:
    if not held_out.exists():
      raise ConfigError("config.data.on_policy needs held-out pairs for eval when "
                        f"config.data.source={config.data.source!r}: set config.data.eval_input.")
    config.data.eval_input = str(held_out)
  config.data.source = str(train)


def _write_jsonl(path: pathlib.Path, records: Sequence[dict]) -> None:
  tmp = path.with_suffix(".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
  os.replace(tmp, path)
