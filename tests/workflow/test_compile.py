"""Compiling a stage for a TPU slice from this machine (libtpu, no TPU): the report's numbers,
every stage's train step, splash attention compiled for real, the sampler, and the advice when
a step does not fit. Also the collective counting on programs whose answer is known."""

import json
import re

import numpy as np
import pytest

from jaxllm.errors import ConfigError
from jaxllm.models import params as params_lib
from jaxllm.models.config import ModelConfig
from jaxllm.parallel import target
from jaxllm.recipes import dpo, pretrain, reward_model, rl, sft
from jaxllm.train import aot, hlo, metrics
from jaxllm.workflow import compile as compile_lib
from tests.experiments.conftest import run_script

HLO = """
HloModule m

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %g = f32[32]{0} all-gather(%x), dimensions={0}
  %r = f32[8]{0} reduce-scatter(%g), dimensions={0}, to_apply=%add
  ROOT %t = (s32[], f32[8]) tuple(%i, %r)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

%cond5 (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]) parameter(0)
  %five = s32[]{:T(128)} constant(5)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %five), direction=LT
}

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body, backend_config={TRIPS}
  %v = (s32[], f32[8]) while(%init), condition=%cond5, body=%body
  %s = (f32[8]{0}, f32[16]{0}) all-gather-start(%x), dimensions={0}
  %d = f32[16]{0} all-gather-done(%s)
  ROOT %a = bf16[4,4]{1,0} all-reduce(%y), to_apply=%add
}
""".replace("{TRIPS}", '{"known_trip_count":{"n":"12"}}')


def test_collectives_are_counted_with_the_trip_counts_of_their_loops():
  got = hlo.collectives(HLO)
  # The loop body runs 12 times (XLA's known trip count) + 5 (read off its condition, i < 5):
  # all-gather f32[32] (128 bytes) and reduce-scatter f32[8] (32 bytes) each time. Outside: an
  # async all-gather's result f32[16] (64 bytes), an all-reduce of bf16[4,4] counted twice (32
  # bytes: reduce-scatter then all-gather).
  assert got == {"all-gather": {"count": 18, "bytes": 17 * 128 + 64},
                 "reduce-scatter": {"count": 17, "bytes": 17 * 32},
                 "all-reduce": {"count": 1, "bytes": 2 * 32}}


def _cpu_step(tiny_config, scan: bool):
  import jax

  from jaxllm.parallel import mesh as mesh_lib
  from jaxllm.parallel import sharding as sharding_lib
  c = tiny_config
  c.model.scan_layers = scan
  c.model.num_layers = 3
  c.mesh.data, c.mesh.fsdp = 1, -1
  mesh = mesh_lib.make_mesh(c.mesh, jax.devices())
  out = aot.compile_train_step(c, pretrain.step_spec(c), mesh,
                               sharding_lib.rules_from_config(c.mesh.rules))
  return hlo.collectives(out["compiled"].as_text()), out


def test_scanned_layers_count_the_same_gradient_reductions_as_unrolled_ones(tiny_config):
  """The same model with its 3 layers in a loop (counted through the loop's trip count) and
  unrolled: each weight's gradient is reduced once per step either way, so the all-reduce bytes
  agree (a loop counted once would give about a third of the layers' share). The weights'
  all-gathers differ for a reason: unrolled, XLA keeps each gathered weight from the forward
  pass for the backward one; looped, it gathers again."""
  looped, out = _cpu_step(tiny_config.copy_and_resolve_references(), scan=True)
  unrolled, unrolled_out = _cpu_step(tiny_config.copy_and_resolve_references(), scan=False)
  assert looped["all-reduce"]["count"] < unrolled["all-reduce"]["count"]  # fewer ops, looped
  assert looped["all-reduce"]["bytes"] == pytest.approx(unrolled["all-reduce"]["bytes"],
                                                        rel=0.01)
  assert looped["all-gather"]["bytes"] >= unrolled["all-gather"]["bytes"] > 0
  # HBM traffic, estimated instruction by instruction, near XLA's own count on the unrolled
  # program (XLA counts a loop's body once, so only there do the two compare).
  compiled = unrolled_out["compiled"]
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert hlo.hbm_traffic(compiled.as_text()) == pytest.approx(cost["bytes accessed"], rel=0.02)
  # What one device holds, summed from the shardings, is what XLA allocates for the arguments
  # (the state and the batch's rows; the RNG key, 8 bytes, may be a constant).
  memory = aot.memory(out["compiled"])
  assert 0 <= memory["arguments"] - (out["state_bytes"] + out["batch_bytes"]) <= 8
  assert out["params_bytes"] < params_lib.param_bytes(out["state"]["params"]) / 4


@pytest.fixture(scope="module")
def v5e():
  """libtpu loaded for a v5e:2x2 slice, and matmuls at the precision runs use (the test
  session's "highest" asks Mosaic for float32 matmuls of bfloat16 inputs, which it refuses)."""
  import jax
  devices = target.topology_devices("v5e:2x2")
  with jax.default_matmul_precision("default"):
    yield devices


def _tpu_config(stage_config):
  c = stage_config
  c.data.seq_len = 256  # splash attention tiles 128
  c.model.max_seq_len = 256
  c.model.vocab_size = 1024
  c.model.dtype = "bfloat16"
  c.model.attention_impl = "auto"
  c.train.batch_size = 16
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.benchmark.sample_batch, c.benchmark.prompt_len, c.benchmark.new_tokens = 4, 64, 32
  return c


@pytest.mark.slow
def test_pretraining_compiles_for_v5e_with_splash_attention_and_the_sampler(v5e):
  config = _tpu_config(pretrain.default_config("tiny"))
  report = compile_lib.compile_for(config, "v5e:2x2")
  t = report["train"]
  assert report["attention"] == "splash" and report["mesh"]["fsdp"] == 4
  assert t["fits"] and report["chip"] == "v5e" and report["device_hbm_gib"] == 16
  # Params per chip: each FSDP-sharded leaf a quarter, the replicated ones (norm scales) whole.
  import jax

  from jaxllm.models import Transformer
  model_cfg = ModelConfig.from_dict(config.model)
  shapes = params_lib.unbox(jax.eval_shape(params_lib.init_params_fn(Transformer(model_cfg),
                                                                     8), jax.random.key(0)))
  leaves = jax.tree.leaves(shapes)
  total = sum(int(np.prod(x.shape)) * 4 for x in leaves)
  replicated = sum(int(np.prod(x.shape)) * 4 for x in leaves if len(x.shape) == 1)
  assert t["params_bytes"] == (total - replicated) / 4 + replicated
  # FLOPs: the model's count for 16 x 256 tokens; XLA's own (which skips the splash kernel)
  # near it.
  assert t["model_flops_per_step"] == metrics.train_flops_per_token(model_cfg, 256) * 16 * 256
  assert 0.5 < t["xla_flops_per_device"] / t["model_flops_per_device"] < 1.5
  assert t["estimate"]["step_seconds_lower_bound"] > 0 and 0 < t["estimate"][
      "mfu_upper_bound"] <= 1
  assert report["sampler"]["fits"] and report["sampler"]["cache_bytes"] > 0
  assert "pretrain on v5e:2x2 (4 v5e devices, 1 host" in compile_lib.describe(report)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft_lora", "reward_model", "dpo", "rl"])
def test_every_fine_tuning_stage_compiles_for_v5e(v5e, stage):
  make = {"sft_lora": sft.default_config, "reward_model": reward_model.default_config,
          "dpo": dpo.default_config, "rl": rl.default_config}[stage]
  config = _tpu_config(make("tiny"))
  if stage == "sft_lora":
    config.lora.rank = 8
  if stage == "rl":
    config.rl.group_size = 4
  if stage == "dpo":
    config.preference.reference = "in_step"  # the reference runs in every step, frozen
  report = compile_lib.compile_for(config, "v5e:2x2", sampler=False)
  t = report["train"]
  assert t["fits"] and t["num_params"] > 0
  # XLA's own FLOP count near the model's: a LoRA step has no weight gradients for its base (4 N
  # a token, not 6 N), a pair row is two sequences, an in-step reference adds a forward. (RL's
  # epochs loop is counted once by XLA, so its count is not comparable.)
  if stage != "rl":
    assert 0.5 < t["xla_flops_per_device"] / t["model_flops_per_device"] < 1.5, t
  if stage == "sft_lora":  # only the adapters train; the base rides along frozen
    assert 0 < t["num_params"] < t["num_frozen"] / 4
  if stage == "dpo":  # the policy beside its frozen reference, two sequences a row
    assert t["num_frozen"] == t["num_params"]
    per_pair = 2 * 256 * metrics.train_flops_per_token(ModelConfig.from_dict(config.model), 256)
    assert t["model_flops_per_step"] == pytest.approx(16 * per_pair * 4 / 3)  # + a forward


@pytest.mark.slow
def test_a_step_that_does_not_fit_exits_2_with_advice_and_writes_its_report(tmp_path):
  out = tmp_path / "report.json"
  done = run_script("compile.py", "--config=configs/pretrain/tiny.py", "--topology=v5e:1x1",
                    "--config.model.vocab_size=8388608", "--config.data.seq_len=128",
                    "--nosampler", f"--out={out}")
  assert done.returncode == 2, done.stderr[-3000:]
  error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  # 8M ids x 64 wide: 2 GiB of params, 6 GiB with Adam's moments, the rest the logits.
  assert len(error) == 1 and re.search(
      r"the pretrain train step needs [\d.]+ GiB per device on v5e:1x1 and a v5e device has "
      r"16.00 GiB \(the compiler's limit: 15.75 GiB\); of it 6.00 GiB are params and optimizer "
      r"state", error[0]), error
  # Mostly the logits: the loss chunked and activations recomputed are advised; the state is
  # under half the chip, so more FSDP is not.
  assert "--config.train.loss_chunk=512" in error[0] and "remat=full" in error[0]
  assert "fsdp" not in error[0]
  report = json.loads(out.read_text())
  assert report["train"]["fits"] is False and report["train"]["total_gib"] > 16
  assert report["command"].startswith("python experiments/compile.py --config=configs/pretrain")
  # The docs' table is made from such reports: a row named after the file, said not to fit.
  listed = run_script("compile.py", f"--table={tmp_path}/*.json")
  assert listed.returncode == 0, listed.stderr
  assert "| report | v5e:1x1 | 16 x 128 | no | " in listed.stdout


def test_a_fine_tuning_config_takes_its_architecture_from_model_or_the_init_run(tmp_path):
  """--model names a pretraining config; --config.init.checkpoint a run (its config.json). How
  to run the model (dtype, remat, ...) stays the stage config's."""
  import ml_collections
  stage = sft.default_config("tiny")
  stage.model.remat = "full"
  big = pretrain.accelerator_config("llama-1b", None, seq_len=2048)
  got = compile_lib.with_model(stage, big)
  assert (got.model.d_model, got.model.num_layers) == (2048, 16)
  assert got.model.remat == "full" and got.model.dtype == stage.model.dtype
  assert stage.model.d_model != 2048  # the stage config itself is left alone
  run = tmp_path / "run"
  (run / "checkpoints" / "5").mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"model": big.model.to_dict()}))
  stage.init.checkpoint = str(run)
  config = ml_collections.ConfigDict(stage.to_dict())
  compile_lib.resolve_model(config)
  assert config.model.d_model == 2048 and config.model.remat == "full"
  stage.init.checkpoint = str(tmp_path / "nothing")
  with pytest.raises(ConfigError, match="no config.json there"):
    compile_lib.resolve_model(ml_collections.ConfigDict(stage.to_dict()))


@pytest.mark.slow
def test_pretraining_compiles_for_h100s_without_a_gpu(tmp_path):
  """experiments/compile.py --topology=h100:2 on this machine (JAX's CUDA plugin, XLA's H100
  description, JAX_PLATFORMS unset as a user has it): the step fits, each GPU holds half of every
  FSDP-sharded param, and the FLOPs are the model's."""
  import subprocess
  import sys

  from tests.experiments.conftest import child_env
  from tests.helpers import ROOT, cuda_plugin
  out = tmp_path / "h100.json"
  env = {k: v for k, v in child_env().items() if k != "JAX_PLATFORMS"}
  env["PYTHONPATH"] = str(cuda_plugin())  # JAX finds the plugin there, in this process only
  done = subprocess.run(
      [sys.executable, "experiments/compile.py", "--config=configs/pretrain/tiny.py",
       "--topology=h100:2", "--config.model.dtype=bfloat16", "--config.mesh.data=1",
       "--config.mesh.fsdp=-1", "--nosampler", f"--out={out}"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "pretrain on h100:2 (2 h100 devices, 1 host" in done.stdout
  report = json.loads(out.read_text())
  t = report["train"]
  assert report["chip"] == "h100" and report["mesh"]["fsdp"] == 2 and t["fits"]
  assert report["device_hbm_gib"] == pytest.approx(79.1, abs=0.05)
  assert report["compiler"].startswith("jax-cuda12-pjrt ")
  import jax

  from jaxllm import config as config_lib
  from jaxllm.models import Transformer
  config = config_lib.load_config_file(ROOT / "configs/pretrain/tiny.py")
  config.model.vocab_size = report["model"]["vocab_size"]  # the tokenizer's, resolved
  model_cfg = ModelConfig.from_dict(config.model)
  shapes = params_lib.unbox(jax.eval_shape(params_lib.init_params_fn(Transformer(model_cfg), 8),
                                           jax.random.key(0)))
  leaves = jax.tree.leaves(shapes)
  total = sum(int(np.prod(x.shape)) * 4 for x in leaves)
  replicated = sum(int(np.prod(x.shape)) * 4 for x in leaves if len(x.shape) == 1)
  assert t["params_bytes"] == (total - replicated) / 2 + replicated
  seq_len, batch = report["seq_len"], report["batch_size"]
  assert t["model_flops_per_step"] == metrics.train_flops_per_token(model_cfg, seq_len) * (
      batch * seq_len)
