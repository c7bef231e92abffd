"""EleutherAI's lm-evaluation-harness on any jaxllm run: an lm-eval model named "jaxllm".

    python -m jaxllm.eval.harness --model jaxllm --model_args run=RUN,step=N,batch_size=16 \\
        --tasks hellaswag,gsm8k
    python -m jaxllm.eval.harness --model jaxllm --model_args run=RUN \\
        --tasks my_task --include_path DIR        # tasks from local YAML files, offline

The command takes exactly lm-eval's arguments: it registers the model and hands over to
lm-eval's own command line (lm-eval finds models only in its registry, and scans no installed
package for more, so `lm_eval --model jaxllm` itself cannot see this one). Without
--output_path the results go into the run: RUN/lm_eval/results_<time>.json (with --log_samples,
the samples beside them), next to the project's own eval.json and never over an earlier result.
In Python, import this module, then `lm_eval.simple_evaluate(model="jaxllm",
model_args="run=RUN")`, or pass a `JaxllmLM` as the model.

model_args: run (the run directory, local or gs://), step (a checkpoint; the newest when left
out), batch_size (rows per compiled call, "auto" is 16; beats the command's --batch_size),
max_length (the context; config.model.max_seq_len), max_gen_toks (256), add_bos_token (None:
the tokenizer's own rule; True or False as lm-eval's hf backend takes it), prefix_token_id
(what an empty context and a rolling window start from: BOS, else EOS), seed (sampling, when a
task samples).

What runs is the project's own compiled code on the run's params, placed as every stage places
them (runs.load_run): log-likelihoods are length-bucketed forward passes of a fixed batch (one
compile per bucket); generation is the KV-cache sampler, greedy unless the task samples, ending
each row at EOS, at the end of an assistant turn, or at a stop string (matched inside the decode
loop, jaxllm/inference/stop_strings.py); the chat template, when lm-eval asks for it
(--apply_chat_template), is the run's own (data/chat.py). Text is tokenized as Hugging Face
tokenizers do, special-token strings in it included, so that prompts lm-eval builds read as they
would through its `hf` backend on the exported model. One difference, on purpose:
`loglikelihood_rolling` (perplexity tasks) starts each document from one BOS, as the model was
trained and as jaxllm's perplexity scores it; lm-eval's `hf` backend, for a tokenizer that adds
BOS itself, puts a second one before it (run it with add_bos_token=False to compare).

It runs in one process, on that machine's devices (a run larger than one device is spread over
them).
"""

import json
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from tqdm import tqdm

try:
  import lm_eval.models  # noqa: F401  (fills the registry with lm-eval's own models first)
  from lm_eval import utils as lm_eval_utils
  from lm_eval.api import model as lm_model
  from lm_eval.api import registry
  from lm_eval.models import utils as lm_models_utils
except ImportError as e:  # an optional extra
  raise ImportError("jaxllm.eval.harness needs lm-evaluation-harness: pip install "
                    "'jaxllm[harness]' (or pip install lm-eval).") from e

from jaxllm import runs, storage
from jaxllm.data import chat as chat_lib
from jaxllm.errors import UserError
from jaxllm.inference import sampler as sampler_lib
from jaxllm.inference import stop_strings
from jaxllm.models import params as params_lib
from jaxllm.parallel import sharding as sharding_lib

NAME = "jaxllm"
_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "do_sample")


def length_buckets(max_length: int) -> tuple[int, ...]:
  """Padded row lengths: 16, 24, 32, 48, 64, 96, ... (powers of two and 1.5 times them: a row
  is padded by a third at most, a few compiles cover every length) up to the context itself."""
  steps = sorted({b for p in sampler_lib.POWERS_OF_TWO for b in (p, 3 * p // 2) if b >= 16})
  return (*(b for b in steps if b < max_length), max_length)


def _batch_size(value) -> int:
  if value in (None, "auto") or str(value).startswith("auto"):
    return 16
  try:
    size = int(value)
  except (TypeError, ValueError):
    size = 0
  if size < 1:
    raise UserError(f"batch_size={value!r}: give a whole number >= 1 (rows per compiled call).")
  return size


@registry.register_model(NAME)
class JaxllmLM(lm_model.TemplateLM):
  """A jaxllm run as an lm-eval language model (see the module docstring for its arguments)."""

  def __init__(self, run: str | None = None, step: int | None = None, batch_size=16,
               max_length: int | None = None, max_gen_toks: int = 256,
               add_bos_token: bool | None = None, prefix_token_id: int | None = None,
               seed: int = 0, device=None, max_batch_size=None, **unknown):
    super().__init__()
    del device, max_batch_size  # lm-eval passes them to every model; JAX places the params
    if unknown:
      raise UserError(f"--model_args {', '.join(sorted(unknown))}: not an argument of the jaxllm "
                      "model; it takes run, step, batch_size, max_length, max_gen_toks, "
                      "add_bos_token, prefix_token_id and seed.")
    if not run:
      raise UserError("--model_args run=RUN is missing: the run directory to evaluate.")
    self.run = runs.load_run(run, None if step is None else int(step))
    runs.require_language_model(self.run, "--model_args run", run)
    self.run_dir = str(run)
    self.batch_size = _batch_size(batch_size)
    self._max_length = int(max_length or self.run.model.cfg.max_seq_len)
    self._max_gen_toks = int(max_gen_toks)
    self.add_bos_token = add_bos_token
    self.custom_prefix_token_id = prefix_token_id
    self.seed = int(seed)
    tok = self.tokenizer = self.run.tokenizer
    # Hugging Face's reading of text: special-token strings are the special tokens (lm-eval's
    # prompts and chat-templated turns carry them as text); jaxllm's own encode reads them as
    # plain text.
    self._hf = tokenizers.Tokenizer.from_str(tok.hf_tokenizer.to_str())
    self._hf.encode_special_tokens = False
    self._bos_text = None if tok.bos_id is None else self._hf.id_to_token(tok.bos_id)
    model, mesh, rules = self.run.model, self.run.mesh, self.run.rules

    def score(params, inputs_bt, targets_bt, mask_bt):
      logits_btv = model.apply({"params": params}, inputs_bt).astype(jnp.float32)
      logp_btv = jax.nn.log_softmax(logits_btv, axis=-1)
      logp_bt = jnp.take_along_axis(logp_btv, targets_bt[..., None], axis=-1)[..., 0]
      greedy_bt = jnp.argmax(logits_btv, axis=-1) == targets_bt
      return (jnp.sum(logp_bt * mask_bt, axis=-1),
              jnp.all(greedy_bt | (mask_bt == 0), axis=-1))

    jitted = jax.jit(score)

    def run_score(*arrays):
      with sampler_lib.mesh_context(mesh, rules):
        return sharding_lib.fetch(jitted(self.run.params, *arrays))

    self._score = run_score
    self._pad = tok.pad_id if tok.pad_id is not None else 0  # padding is masked: any id will do
    self._sampler = sampler_lib.Sampler(model, self.run.params, self._pad, mesh=mesh,
                                        rules=rules, vocab_limit=tok.vocab_size)
    self._stop_tables: dict[tuple[str, ...], np.ndarray] = {}
    # the ids that end a generation, as the exported generation_config.json says: the end of an
    # assistant turn and EOS (EOS alone for a vocabulary without a chat format)
    self._stop_ids = (chat_lib.stop_ids(tok) if chat_lib.format_name(tok) != "no chat"
                      else [self.eot_token_id])
    self.buckets = length_buckets(self._max_length)

  # lm-eval's CLI passes its own --batch_size (default 1) beside model_args; a batch_size in
  # model_args is the one meant, as the module docstring says.
  @classmethod
  def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
    return cls.create_from_arg_obj(lm_eval_utils.simple_parse_args_string(arg_string),
                                   additional_config)

  @classmethod
  def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
    extra = {k: v for k, v in (additional_config or {}).items()
             if v is not None and k not in arg_dict}
    return cls(**arg_dict, **extra)

  # --- tokens ---------------------------------------------------------------------------------

  @property
  def eot_token_id(self) -> int:
    if self.tokenizer.eos_id is None:
      raise UserError("the run's tokenizer has no EOS token, which lm-eval needs to end "
                      "generations and to start empty contexts; give prefix_token_id=ID.")
    return self.tokenizer.eos_id

  @property
  def prefix_token_id(self) -> int:
    if self.custom_prefix_token_id is not None:
      return int(self.custom_prefix_token_id)
    return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.eot_token_id

  @property
  def max_length(self) -> int:
    return self._max_length

  @property
  def max_gen_toks(self) -> int:
    return self._max_gen_toks

  @property
  def tokenizer_name(self) -> str:
    return f"jaxllm:{self.run_dir}@{self.run.step}"

  def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                 left_truncate_len: int | None = None, **kwargs) -> list[int]:
    """Ids of `string` as lm-eval's hf backend reads it: BOS by the tokenizer's rule (or
    add_bos_token; never when the text already starts with it), special-token strings as their
    tokens."""
    del kwargs
    if add_special_tokens is None:
      add_special_tokens = self.add_bos_token
      if self._bos_text and string.startswith(self._bos_text):
        add_special_tokens = False
    with_bos = self.tokenizer.add_bos if add_special_tokens is None else add_special_tokens
    ids = self._hf.encode(string, add_special_tokens=False).ids
    if with_bos and self.tokenizer.bos_id is not None:
      ids = [self.tokenizer.bos_id, *ids]
    return ids[-left_truncate_len:] if left_truncate_len else ids

  def tok_decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`, special tokens left out (as lm-eval decodes generations)."""
    specials = self.tokenizer.special_ids
    return self.tokenizer.decode([t for t in ids if t not in specials])

  # --- log-likelihoods ------------------------------------------------------------------------

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs
                            ) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probs, whether greedy decoding gives it) for each
    (key, context ids, continuation ids); longest first, `batch_size` rows a call."""
    del kwargs
    rows = []
    for key, context, continuation in requests:
      if not continuation:
        raise UserError(f"an empty continuation to score (request {key!r}).")
      if len(continuation) > self.max_length:
        raise UserError(f"a continuation of {len(continuation)} tokens is longer than the "
                        f"context of {self.max_length} (max_length).")
      whole = (list(context) + list(continuation))[-(self.max_length + 1):]
      rows.append((whole[:-1], whole[1:], len(continuation)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
    bar = tqdm(total=len(rows), disable=disable_tqdm or self.rank != 0,
               desc="jaxllm loglikelihood")
    for start in range(0, len(order), self.batch_size):
      chunk = order[start:start + self.batch_size]
      width = sampler_lib.bucket(len(rows[chunk[0]][0]), self.buckets)
      inputs = np.full((self.batch_size, width), self._pad, np.int32)
      targets = np.zeros((self.batch_size, width), np.int32)
      mask = np.zeros((self.batch_size, width), np.float32)
      for b, i in enumerate(chunk):
        x, y, n = rows[i]
        inputs[b, :len(x)], targets[b, :len(y)] = x, y
        mask[b, len(y) - n:len(y)] = 1.0
      logp_b, greedy_b = self._score(inputs, targets, mask)
      for b, i in enumerate(chunk):
        out[i] = (float(logp_b[b]), bool(greedy_b[b]))
        key = requests[i][0]
        if key is not None:
          self.cache_hook.add_partial("loglikelihood", key, out[i])
      bar.update(len(chunk))
    bar.close()
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Each text's log-likelihood after one prefix token (BOS), every token scored once, in
    windows of max_length as lm-eval cuts them (the last window with a full context)."""
    windows, owners = [], []
    for index, (text,) in enumerate(req.args for req in requests):
      pieces = lm_eval_utils.get_rolling_token_windows(
          token_list=self.tok_encode(text, add_special_tokens=False),
          prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1)
      for context, continuation in map(lm_eval_utils.make_disjoint_window, pieces):
        windows.append((None, context, continuation))
        owners.append(index)
    scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
    totals = [0.0] * len(requests)
    for owner, (logp, _) in zip(owners, scores):
      totals[owner] += logp
    for req, total in zip(requests, totals):
      self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
    return totals

  # --- generation -----------------------------------------------------------------------------

  def _stop_table(self, strings: Sequence[str]) -> np.ndarray:
    key = tuple(strings)
    if key not in self._stop_tables:
      self._stop_tables[key] = stop_strings.table(stop_strings.token_bytes(self.tokenizer),
                                                  strings)
    return self._stop_tables[key]

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Each context's continuation until a stop string (lm-eval's `until`, and EOS) or a stop
    token (EOS, the end of an assistant turn), at most max_gen_toks tokens; greedy unless the
    request samples (do_sample, temperature, top_k, top_p)."""
    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
      groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
    out = [""] * len(requests)
    eos_text = self.tokenizer.decode([self.eot_token_id])
    bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
               desc="jaxllm generate_until")
    for indices in groups.values():
      kwargs = lm_models_utils.normalize_gen_kwargs(requests[indices[0]].args[1],
                                                    self.max_gen_toks)
      until = lm_models_utils.handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
      max_new = int(kwargs.pop("max_gen_toks"))
      sampling = {k: kwargs.pop(k) for k in _SAMPLING_KEYS if k in kwargs}
      if kwargs:
        raise UserError(f"generation settings {sorted(kwargs)} are not supported by the jaxllm "
                        f"model (it takes until, max_gen_toks and {', '.join(_SAMPLING_KEYS)}).")
      temperature = float(sampling.get("temperature", 0.0)) if sampling.get("do_sample") else 0.0
      room = self.max_length - max_new
      if room < 1:
        raise UserError(f"max_gen_toks={max_new} leaves no room for the prompt in the context of "
                        f"{self.max_length} tokens; lower it.")
      prompts = {i: self.tok_encode(requests[i].args[0], left_truncate_len=room) for i in indices}
      order = sorted(indices, key=lambda i: -len(prompts[i]))
      table = self._stop_table(until)
      for batch_index, start in enumerate(range(0, len(order), self.batch_size)):
        chunk = order[start:start + self.batch_size]
        sample = self._sampler.generate(
            [prompts[i] for i in chunk], max_new, temperature=temperature,
            top_k=int(sampling.get("top_k") or 0), top_p=float(sampling.get("top_p") or 1.0),
            stop_tokens=self._stop_ids, seed=self.seed + batch_index, stop_table=table)
        for i, ids in zip(chunk, sample.completions()):
          out[i] = lm_models_utils.postprocess_generated_text(self.tok_decode(ids), until, None)
          self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        bar.update(len(chunk))
    bar.close()
    return out

  # --- chat -----------------------------------------------------------------------------------

  def apply_chat_template(self, chat_history: list[dict[str, str]],
                          add_generation_prompt: bool = True) -> str:
    """The conversation in the run's chat format as text (special tokens as their strings),
    ending where the assistant writes; with add_generation_prompt=False the last (assistant)
    message is left open for the task's continuation, as transformers' continue_final_message."""
    messages = [{"role": m["role"], "content": m["content"]} for m in chat_history]
    if add_generation_prompt:
      ids, _ = chat_lib.render_chat(self.tokenizer, messages, add_generation_prompt=True)
      return self.tokenizer.decode(ids)
    ids, _ = chat_lib.render_chat(self.tokenizer, messages)
    text, final = self.tokenizer.decode(ids), messages[-1]["content"].strip()
    return text[:text.rindex(final) + len(final)] if final else text

  def chat_template(self, chat_template: bool | str = False) -> str | None:
    if not chat_template:
      return None
    return chat_lib.chat_template(chat_lib.format_of(self.tokenizer))

  def get_model_info(self) -> dict:
    return {"jaxllm_run": self.run_dir, "jaxllm_step": self.run.step,
            "jaxllm_stage": runs.stage_of(self.run.config),
            "model_num_parameters": params_lib.count_params(self.run.params)}


def _default_output(args) -> str | None:
  """RUN/lm_eval/results.json (lm-eval adds the time to the name) when the command evaluates a
  jaxllm run and names no --output_path; for a gs:// run its local folder's, uploaded after."""
  if getattr(args, "model", None) != NAME or getattr(args, "output_path", None):
    return None
  run = (getattr(args, "model_args", None) or {}).get("run")
  if not run:
    return None
  return str(storage.local_folder(run) / "lm_eval" / "results.json")


def _upload(run, folder) -> None:
  """Copies the files of `folder` (lm-eval's output) into RUN/lm_eval/ on cloud storage."""
  remote = storage.path(run) / "lm_eval"
  for src in storage.path(folder).iterdir():
    if src.is_file() and not (remote / src.name).exists():
      (remote / src.name).write_bytes(src.read_bytes())


def main(argv: Sequence[str] | None = None) -> None:
  """lm-eval's command line with the jaxllm model registered (python -m jaxllm.eval.harness)."""
  from lm_eval._cli.harness import HarnessCLI
  from lm_eval.utils import setup_logging

  from jaxllm import cli

  if argv is not None:
    sys.argv = [sys.argv[0], *argv]
  setup_logging()
  parser = HarnessCLI()
  args = parser.parse_args()
  output = _default_output(args)
  if output is not None:
    args.output_path = output
  try:
    parser.execute(args)
  except UserError as e:
    cli.fail(str(e))
  if output is not None:
    run = args.model_args["run"]
    if storage.is_remote(run):
      _upload(run, storage.path(output).parent)
    print(f"wrote {storage.path(run) / 'lm_eval'}")


if __name__ == "__main__":
  main()
