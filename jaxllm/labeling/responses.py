"""The responses to label: a run's sampled replies to each prompt, stored in
RUN/labels/responses.jsonl so a restart serves the same ones (only new prompts are sampled)."""

import dataclasses
import pathlib

from jaxllm import runs
from jaxllm.data import chat
from jaxllm.errors import UserError
from jaxllm.inference import generate
from jaxllm.inference.sampler import Sampler
from jaxllm.labeling import store as labels


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How responses are sampled; `chat` None: the chat template unless the run is a base model."""
  samples: int = 4
  temperature: float = 1.0
  top_p: float = 1.0
  max_new_tokens: int = 128
  batch_size: int = 32
  seed: int = 0
  chat: bool | None = None


def sample_items(workdir, prompts: list[tuple[str, object]], sampling: Sampling,
                 step: int | None = None) -> tuple[list[labels.Item], dict]:
  """(items, {"step", "chat"}): `sampling.samples` responses to each (id, prompt) from the run's
  model, the checkpoint step it used and whether prompts got the chat template."""
  run = runs.load_run(workdir, step)
  if runs.is_reward_model(run.config):
    raise UserError(f"--workdir={workdir} is a reward-model run, which does not generate; "
                    "label the responses of a language model (an SFT or pretrained run).")
  tok = run.tokenizer
  use_chat = sampling.chat if sampling.chat is not None else runs.model_kind(run.config) == "chat"
  encoded = []
  for pid, prompt in prompts:
    if use_chat:
      ids, _ = chat.render_chat(tok, chat.prompt_messages(prompt),
                                add_generation_prompt=True)
    else:
      if not isinstance(prompt, str):
        raise UserError(f"prompt {pid!r} is a list of messages but the run is labeled in plain "
                        "text (a base run); give it as a string, or pass --chat.")
      ids = tok.encode_prompt(prompt)
    encoded.append(ids)
  stops = chat.stop_ids(tok) if use_chat else ([] if tok.eos_id is None else [tok.eos_id])
  smp = Sampler(run.model, run.params, tok.pad_id, vocab_limit=tok.vocab_size)
  texts = generate.generate_text(
      smp, tok, [ids for ids in encoded for _ in range(sampling.samples)],
      sampling.max_new_tokens, batch_size=sampling.batch_size, temperature=sampling.temperature,
      top_p=sampling.top_p, stop_tokens=stops, seed=sampling.seed,
      on_batch=lambda done, total: print(f"sampled {done}/{total} responses", flush=True))
  n = sampling.samples
  items = [labels.Item(pid, prompt, tuple(texts[p * n:(p + 1) * n]))
           for p, (pid, prompt) in enumerate(prompts)]
  return items, {"step": run.step, "chat": use_chat}


def prepare_items(workdir, prompts_file: str | None, sampling: Sampling,
                  step: int | None = None) -> list[labels.Item]:
  """The items to label: stored responses, plus newly sampled ones for the prompts of
  `prompts_file` not stored yet (appended to responses.jsonl before they are served)."""
  path = pathlib.Path(workdir) / "labels" / "responses.jsonl"
  stored = {item.id: item for item in labels.read_items(path)}
  if prompts_file is None:
    if not stored:
      raise UserError(f"{path} holds no responses yet; pass --prompts=FILE.jsonl to sample "
                      "some.")
    return list(stored.values())
  if not 2 <= sampling.samples <= 9:
    raise UserError(f"--samples={sampling.samples}: rank between 2 and 9 responses per prompt.")
  prompts = labels.read_prompts(prompts_file)
  for pid, prompt in prompts:
    if pid in stored and stored[pid].prompt != prompt:
      raise UserError(f"{prompts_file}: prompt id {pid!r} has other text than the one whose "
                      f"responses {path} holds; give the changed prompt a new id (judgements "
                      "name prompts by id).")
  missing = [(pid, prompt) for pid, prompt in prompts if pid not in stored]
  if missing:
    new, used = sample_items(workdir, missing, sampling, step)
    record = {k: v for k, v in dataclasses.asdict(sampling).items()
              if k not in ("batch_size", "chat")}
    path.parent.mkdir(parents=True, exist_ok=True)
    labels.cut_torn_line(path)
    labels.append_jsonl(path, [labels.item_record(item, {**record, **used}) for item in new])
    stored.update({item.id: item for item in new})
  print(f"{len(prompts)} prompts: {len(prompts) - len(missing)} with stored responses, "
        f"{len(missing)} sampled now ({path})", flush=True)
  return [stored[pid] for pid, _ in prompts]
