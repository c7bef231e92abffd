"""Does a config fit a TPU slice (or a set of H100s), and how fast could it be at best? Answered
from any machine by compiling the stage's real train step (and the sampler) for the target: a
TPU slice with libtpu, GPUs with JAX's CUDA plugin and XLA's description of the GPU.

  python experiments/compile.py --config=configs/pretrain/llama_1b.py --topology=v5e:2x4
  python experiments/compile.py --config=configs/sft/hf_lora.py:batch=8 \\
      --model=configs/pretrain/llama3_8b.py --topology=v5e:2x4
  python experiments/compile.py --config=configs/pretrain/llama_1b.py --topology=h100:8

The stage comes from config.stage (pretrain, sft, reward_model, dpo, rl: the RL policy update).
Fine-tuning configs take their architecture from the init run when they train; here
`--model=PRETRAIN_CONFIG` (or `--config.init.checkpoint=RUN`, whose config.json is read) names
it. The report (printed, and written as JSON with --out) gives per chip: memory (train state,
batch, frozen params, temporaries, outputs) against the chip's HBM; compile time; the model's
FLOPs per step (6 N + attention per token; XLA's own count is shown beside it and misses loops'
repeats and Pallas kernels); the bytes of each kind of collective in the compiled program (with
the trip counts of the loops around them); and a roofline lower bound on the step time from the
FLOPs, HBM and ICI traffic and the chip's published peaks (jaxllm/parallel/target.py), with the
MFU upper bound it implies. Both are estimates (jaxllm/train/hlo.py: every instruction reads its
operands from HBM and writes its result once; collectives move their result's bytes over ICI;
the bound is the longest of the three times, as if the other two overlapped with it entirely).

A step that does not fit ends with exit status 2 and advice that names the numbers.
"""

import glob
import json
import math
import os
import pathlib
import sys
from typing import Any

import jax
import ml_collections

from jaxllm import config as config_lib
from jaxllm import rundir
from jaxllm.data import inputs
from jaxllm.errors import ConfigError, UserError
from jaxllm.models import Transformer, transformer
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.parallel import target
from jaxllm.recipes import dpo, pretrain, reward_model, rl, sft
from jaxllm.train import aot, hlo

STAGES = {"pretrain": pretrain, "sft": sft, "reward_model": reward_model, "dpo": dpo, "rl": rl}
GiB = 2 ** 30


class DoesNotFit(UserError):
  """The train step needs more memory per device than the device has (exit status 2); `report`
  holds what was measured."""

  def __init__(self, message: str, report: dict[str, Any]):
    super().__init__(message)
    self.report = report


_HOW_TO_RUN = ("dtype", "scan_layers", "remat", "attention_impl")  # kept from the stage config


def _set_architecture(config, model: dict) -> None:
  """config.model becomes `model`, except how to run it (dtype, scanned layers, remat,
  attention), which stays the stage config's."""
  keep = {k: config.model[k] for k in _HOW_TO_RUN if k in config.model}
  config.model = ml_collections.ConfigDict(model)
  config.model.update(keep)


def with_model(config, model_config) -> ml_collections.ConfigDict:
  """A copy of `config` with the architecture (config.model, the tokenizer size) of the config
  `model_config` (--model)."""
  out = ml_collections.ConfigDict(config.to_dict())
  _set_architecture(out, model_config.model.to_dict())
  out.data.tokenizer_vocab_size = model_config.data.tokenizer_vocab_size
  return out


def resolve_model(config) -> None:
  """The init run's architecture when config.init.checkpoint names a run (its config.json), and
  a vocabulary size for config.model.vocab_size=0 (the tokenizer's, padded as a run pads it)."""
  if config.get("init", {}).get("checkpoint"):
    saved = rundir.saved_config(config.init.checkpoint)
    if saved is None:
      raise ConfigError(f"--config.init.checkpoint={config.init.checkpoint}: no config.json "
                        "there; name a run directory, or give --model=PRETRAIN_CONFIG.")
    _set_architecture(config, saved["model"])
  if config.model.vocab_size == 0:
    inputs.check_vocab(config, config.data.tokenizer_vocab_size)


def compile_for(config, topology: str, sampler: bool = True) -> dict[str, Any]:
  """The report (a dict, as written to JSON) of `config`'s train step compiled for the slice
  `topology`; raises DoesNotFit (with the report as .report) when it needs too much memory."""
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy: resolved here
  stage = config.get("stage", "")
  if stage not in STAGES:
    raise ConfigError(f"config.stage={stage!r}: experiments/compile.py compiles the train step "
                      f"of {', '.join(STAGES)}.")
  resolve_model(config)
  devices = target.topology_devices(topology)
  chip = target.chip(devices[0].device_kind)
  if chip is None:
    raise ConfigError(f"--topology={topology}: no published figures for {devices[0].device_kind!r}"
                      " in jaxllm/parallel/target.py CHIPS; add them there.")
  per_chip = target.devices_per_chip(devices)
  hbm = chip.hbm_bytes / per_chip
  report: dict[str, Any] = {
      "stage": stage, "topology": topology, "chip": chip.name, "devices": len(devices),
      "hosts": target.process_count(devices), "devices_per_chip": per_chip,
      "device_hbm_gib": hbm / GiB, "jax": jax.__version__,
      "compiler": _compiler_version(devices[0].platform),
      "batch_size": config.train.batch_size, "seq_len": config.data.seq_len,
      "microbatches": config.train.microbatches, "model": _model_summary(config),
  }
  with target.compiling_for(devices[0].platform):
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    rules = sharding_lib.rules_from_config(config.mesh.rules)
    report["mesh"] = dict(mesh.shape)
    spec = STAGES[stage].step_spec(config)
    report["attention"] = _attention(config)
    try:
      step = aot.compile_train_step(config, spec, mesh, rules)
    except aot.OutOfMemory as e:  # XLA could not place the step (it says so at compile time)
      needs, limit = e.needs
      sizes = {k: v for k, v in e.sizes.items() if k.endswith("_bytes")}
      if "temporaries" in str(e):  # XLA's figure is the temporaries alone; add what is held
        sizes["temporaries_bytes"] = needs
        needs += sizes["state_bytes"] + sizes["batch_bytes"] + sizes["frozen_bytes"]
      report["train"] = {"fits": False, "total_bytes": needs, "total_gib": needs / GiB,
                         "compiler_limit_gib": limit / GiB, "compiler": str(e), **sizes}
      raise DoesNotFit(_advice(report, config, spec), report) from None
    report["train"] = _train_report(step, spec, config, chip, len(devices), per_chip, hbm)
    if sampler and stage != "reward_model":
      report["sampler"] = _sampler_report(config, mesh, rules, chip, per_chip, hbm)
  if not report["train"]["fits"]:
    raise DoesNotFit(_advice(report, config, spec), report)
  return report


def _train_report(step, spec, config, chip, devices: int, per_chip: int,
                  hbm: float) -> dict[str, Any]:
  compiled = step["compiled"]
  mem = aot.memory(compiled)
  model_cfg = spec.model.cfg
  flops = aot.train_flops(model_cfg, spec, config)
  flops_per_device = flops / devices
  text = compiled.as_text()
  collectives = hlo.collectives(text)
  ici_bytes = sum(c["bytes"] for c in collectives.values())
  hbm_traffic = hlo.hbm_traffic(text)
  times = {"flops": flops_per_device / (chip.peak_flops / per_chip),
           "hbm": hbm_traffic / (chip.hbm_bandwidth / per_chip),
           "ici": ici_bytes / (chip.ici_bandwidth / per_chip)}
  bound = max(times.values())
  cost = (compiled.cost_analysis() or {})
  cost = cost[0] if isinstance(cost, list) else cost
  return {
      "fits": mem["total"] <= hbm, "compile_seconds": step["compile_seconds"],
      "num_params": step["num_params"], "num_frozen": step["num_frozen"],
      "params_bytes": step["params_bytes"], "state_bytes": step["state_bytes"],
      "batch_bytes": step["batch_bytes"],
      "frozen_bytes": step["frozen_bytes"], "temporaries_bytes": mem["temporaries"],
      "new_outputs_bytes": mem["outputs"] - mem["aliased"], "arguments_bytes": mem["arguments"],
      "total_bytes": mem["total"], "total_gib": mem["total"] / GiB, "hbm_gib": hbm / GiB,
      "model_flops_per_step": flops, "model_flops_per_device": flops_per_device,
      "xla_flops_per_device": float(cost.get("flops", 0.0)),
      "collectives": collectives, "collective_bytes_per_device": ici_bytes,
      "hbm_traffic_bytes_per_device": hbm_traffic,
      "estimate": {"seconds_by_bound": times, "step_seconds_lower_bound": bound,
                   "bound_by": max(times, key=times.get),
                   "mfu_upper_bound": times["flops"] / bound if bound else 0.0},
  }


def _sampler_report(config, mesh, rules, chip, per_chip: int, hbm: float) -> dict[str, Any]:
  b = config.benchmark
  seq_len = config.data.seq_len
  prompt_len = min(b.prompt_len, seq_len // 2)
  new_tokens = min(b.new_tokens, seq_len - prompt_len)
  out = aot.compile_sampler(Transformer(config_lib.validate(config)), mesh, rules, seq_len,
                            b.sample_batch, prompt_len, new_tokens)
  mem = aot.memory(out["compiled"])
  return {"batch": b.sample_batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
          "compile_seconds": out["compile_seconds"], "params_bytes": out["params_bytes"],
          "cache_bytes": out["cache_bytes"], "total_bytes": mem["total"],
          "total_gib": mem["total"] / GiB, "fits": mem["total"] <= hbm,
          "estimate": {"decode_seconds_per_token_lower_bound":
                       out["params_bytes"] / (chip.hbm_bandwidth / per_chip)}}


def _attention(config) -> str:
  return transformer.attention_implementation(config_lib.validate(config), config.data.seq_len)


def _model_summary(config) -> dict[str, Any]:
  m = config.model
  return {k: m[k] for k in ("d_model", "num_layers", "num_heads", "num_kv_heads", "mlp_dim",
                            "vocab_size", "dtype", "remat", "scan_layers") if k in m}


def _compiler_version(platform: str) -> str:
  """The package that compiled: libtpu for a TPU slice, JAX's CUDA plugin for GPUs."""
  package = "libtpu" if platform == "tpu" else "jax-cuda12-pjrt"
  try:
    from importlib import metadata
    return f"{package} {metadata.version(package)}"
  except Exception:  # not installed as a distribution
    return f"{package} (version unknown)"


def _advice(report, config, spec) -> str:
  """The one message for a step that does not fit: what it needs, of what, and what to change."""
  t = report["train"]
  have = report["device_hbm_gib"]
  state, temporaries = t.get("state_bytes", 0) / GiB, t.get("temporaries_bytes")
  needs = (f"{t['total_gib']:.2f} GiB" if not math.isnan(t["total_gib"]) else
           "more memory than it has")  # NaN: XLA gave no figure
  limit = t.get("compiler_limit_gib", math.nan)
  text = (f"the {report['stage']} train step needs {needs} per device on {report['topology']} "
          f"and a {report['chip']} device has {have:.2f} GiB"
          + (f" (the compiler's limit: {limit:.2f} GiB)" if not math.isnan(limit) else "")
          + f"; of it {state:.2f} GiB are params and optimizer state"
          + (f", {temporaries / GiB:.2f} GiB temporaries" if temporaries is not None else
             " (the rest activations and temporaries)"))
  tips = []
  if state > 0.5 * have:
    mesh = report["mesh"]
    if mesh["fsdp"] * mesh["tensor"] < report["devices"]:
      tips.append(f"shard the state over every chip (--config.mesh.data=1 "
                  f"--config.mesh.fsdp=-1; now mesh {mesh})")
    else:
      tips.append(f"take a larger slice (the state is split over all {report['devices']} "
                  "devices already)")
    if report["stage"] in ("sft", "dpo", "rl") and not spec.lora:
      tips.append("train LoRA adapters (--config.lora.rank=16)")
  if config.model.get("remat", "none") != "full":
    tips.append("recompute activations (--config.model.remat=full)")
  tips.append(f"split the batch (--config.train.microbatches={2 * config.train.microbatches})")
  if not config.train.get("loss_chunk", 0):
    tips.append("chunk the LM head's loss (--config.train.loss_chunk=512)")
  tips.append("or a smaller --config.train.batch_size or --config.data.seq_len")
  return text + "; it would run out of memory. Try: " + "; ".join(tips) + "."


def _size(n: float) -> str:
  return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:.2f} MiB"


def _ms(seconds: float) -> str:
  return f"{seconds * 1000:.3g} ms"


def describe(report: dict[str, Any]) -> str:
  """The report as lines for a terminal."""
  t, m = report["train"], report["model"]
  hosts = report["hosts"]
  lines = [f"{report['stage']} on {report['topology']} ({report['devices']} {report['chip']} "
           f"devices, {hosts} host{'s' * (hosts > 1)}; mesh {report['mesh']}), jax "
           f"{report['jax']}, {report['compiler']}",
           f"model d_model {m.get('d_model')} x {m.get('num_layers')} layers, vocab "
           f"{m.get('vocab_size')}, {m.get('dtype')}, remat {m.get('remat')}; batch "
           f"{report['batch_size']} x {report['seq_len']}, {report['microbatches']} "
           f"microbatch(es), attention {report['attention']}"]
  if "compiler" in t:  # XLA refused to place it: what it said, and the state's share
    return "\n".join(lines + [f"train step: DOES NOT FIT; params and optimizer state "
                              f"{_size(t['state_bytes'])} per device; XLA: {t['compiler']}"])
  lines += [
      f"train step compiled in {t['compile_seconds']:.1f} s: {t['num_params']:,} trained params"
      + (f", {t['num_frozen']:,} frozen" if t["num_frozen"] else ""),
      f"memory per device: {_size(t['total_bytes'])} of {_size(t['hbm_gib'] * GiB)} "
      f"({'fits' if t['fits'] else 'DOES NOT FIT'}): params {_size(t['params_bytes'])}, "
      f"optimizer state {_size(t['state_bytes'] - t['params_bytes'])}, batch "
      f"{_size(t['batch_bytes'])}, frozen {_size(t['frozen_bytes'])}, temporaries "
      f"{_size(t['temporaries_bytes'])}, new outputs {_size(t['new_outputs_bytes'])}",
      f"model FLOPs per step {t['model_flops_per_step']:.3e} ({t['model_flops_per_device']:.3e} "
      f"per device; XLA's count: {t['xla_flops_per_device']:.3e})",
      f"HBM traffic per device and step (estimate) {_size(t['hbm_traffic_bytes_per_device'])}",
      "collectives per device and step: " + (", ".join(
          f"{k} {_size(v['bytes'])} ({int(v['count'])})"
          for k, v in sorted(t["collectives"].items())) or "none"),
  ]
  e = t["estimate"]
  by = e["seconds_by_bound"]
  lines.append(f"estimate: step >= {_ms(e['step_seconds_lower_bound'])} (FLOPs {_ms(by['flops'])}"
               f", HBM {_ms(by['hbm'])}, ICI {_ms(by['ici'])}), so MFU <= "
               f"{e['mfu_upper_bound']:.0%}")
  s = report.get("sampler")
  if s:
    lines.append(f"sampler ({s['batch']} x {s['prompt_len']} prompt + {s['new_tokens']} new) "
                 f"compiled in {s['compile_seconds']:.1f} s: {_size(s['total_bytes'])} per device "
                 f"({'fits' if s['fits'] else 'DOES NOT FIT'}); decode >= "
                 f"{_ms(s['estimate']['decode_seconds_per_token_lower_bound'])} a token "
                 "(estimate: every param read once per token)")
  return "\n".join(lines)


def table(reports: list[tuple[str, dict[str, Any]]]) -> str:
  """Markdown rows, one per (name for the first column, report): what was compiled, where,
  whether it fits, memory per device and the estimate."""
  rows = ["| config | slice | batch | fits | GiB per device: total (state + temporaries) | "
          "step >= (bound by) | MFU <= | compile |",
          "|---|---|---|---|---|---|---|---|"]
  for name, r in reports:
    t = r["train"]
    head = f"| {name} | {r['topology']} | {r['batch_size']} x {r['seq_len']} |"
    state = (t["state_bytes"] + t["frozen_bytes"]) / GiB
    if "compiler" in t:
      rows.append(f"{head} no | {t['total_gib']:.1f} ({state:.1f} + "
                  f"{t['temporaries_bytes'] / GiB:.1f}); XLA's limit "
                  f"{t['compiler_limit_gib']:.2f} | | | |")
      continue
    e = t["estimate"]
    rows.append(
        f"{head} {'yes' if t['fits'] else 'no'} | {t['total_gib']:.1f} of {t['hbm_gib']:.0f} "
        f"({state:.1f} + {t['temporaries_bytes'] / GiB:.1f}) | "
        f"{_ms(e['step_seconds_lower_bound'])} ({e['bound_by']}) | {e['mfu_upper_bound']:.0%} "
        f"| {t['compile_seconds']:.0f} s |")
  return "\n".join(rows)


def write(report: dict[str, Any], path: str) -> None:
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  rundir.write_text(out, json.dumps(report, indent=1, default=float) + "\n")


def main():
  """python -m jaxllm.workflow.compile --config=FILE --topology=NAME (experiments/compile.py)."""
  from absl import flags
  from ml_collections import config_flags

  from jaxllm import cli

  config_flags.DEFINE_config_file("config", None, "A stage's config file (configs/).",
                                  lock_config=True)
  config_flags.DEFINE_config_file("model", None, "Optional: a pretraining config whose model "
                                  "(architecture) a fine-tuning config is compiled with.")
  flags.DEFINE_string("topology", None, "The TPU slice: generation:chips, e.g. v5e:2x4 "
                      "(v5e-8), v5e:16x16, v5p:4x4x8, v6e:2x2, v4:2x2x2; or GPUs: h100:8 "
                      "(one host), h100:4x8 (hosts x GPUs).")
  flags.DEFINE_string("out", None, "Optional: write the report as JSON to this file.")
  flags.DEFINE_bool("sampler", True, "Also compile the KV-cache sampler (config.benchmark's "
                    "sample_batch, prompt_len, new_tokens).")
  flags.DEFINE_string("table", None, "Instead: print a Markdown table of the JSON reports this "
                      "glob matches (docs/tpu.md).")
  cli.define_print_config()
  f = flags.FLAGS

  def run(argv):
    del argv
    if f.table:  # rows named by the files' names, less the slice (NAME_TOPOLOGY.json)
      paths = [pathlib.Path(p) for p in sorted(glob.glob(f.table))]
      if not paths:
        raise UserError(f"--table={f.table!r} matches no file.")
      print(table([(p.stem.rsplit("_", 1)[0], json.loads(p.read_text())) for p in paths]))
      return
    cli.require("config")
    config = with_model(f.config, f.model) if f.model is not None else f.config
    if cli.print_config(config):
      return
    cli.require("topology")
    if target.is_gpu(f.topology) and not os.environ.get("JAX_PLATFORMS"):
      # Without a GPU here the CUDA plugin cannot start, but it compiles when JAX runs on the
      # CPU; with one, the compile for the named GPUs is the same.
      jax.config.update("jax_platforms", "cpu")
    command = "python experiments/compile.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--out="))
    try:
      report = compile_for(config, f.topology, sampler=f.sampler)
    except DoesNotFit as e:
      e.report["command"] = command
      print(describe(e.report), flush=True)
      if f.out:
        write(e.report, f.out)
      raise
    report["command"] = command
    print(describe(report), flush=True)
    if f.out:
      write(report, f.out)
  cli.run(run)


if __name__ == "__main__":
  main()
