"""Nothing is unpickled from disk and no code is evaluated from data: a scan of the package and
the scripts for the calls that would do it (checkpoints are orbax/tensorstore, data is JSON and
ArrayRecord, the calculator walks an ast of arithmetic only)."""

import ast

import pytest

from tests.helpers import ROOT

SOURCES = sorted([*(ROOT / "jaxllm").rglob("*.py"), *(ROOT / "experiments").glob("*.py"),
                  *(ROOT / "configs").rglob("*.py")])
BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("cloudpickle", "load"),
                ("marshal", "loads"), ("shelve", "open"), ("yaml", "unsafe_load")}


def _keyword(call: ast.Call, name: str):
  return next((k.value for k in call.keywords if k.arg == name), None)


def _problems(source: str, name: str) -> list[str]:
  out = []
  for node in ast.walk(ast.parse(source, name)):
    if isinstance(node, ast.Call):
      f = node.func
      where = f"{name}:{node.lineno}"
      if isinstance(f, ast.Name) and f.id in BUILTINS:
        out.append(f"{where}: {f.id}()")
      if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        if (f.value.id, f.attr) in UNSAFE_ATTRS:
          out.append(f"{where}: {f.value.id}.{f.attr}()")
        allow = _keyword(node, "allow_pickle")
        if f.attr == "load" and isinstance(allow, ast.Constant) and allow.value:
          out.append(f"{where}: load(allow_pickle=True)")
        weights_only = _keyword(node, "weights_only")
        if f.value.id == "torch" and f.attr == "load" and not (
            isinstance(weights_only, ast.Constant) and weights_only.value is True):
          out.append(f"{where}: torch.load without weights_only=True")
        if f.value.id == "yaml" and f.attr == "load" and _keyword(node, "Loader") is None:
          out.append(f"{where}: yaml.load without a safe Loader")
      if _keyword(node, "shell") is not None and isinstance(_keyword(node, "shell"), ast.Constant) \
          and _keyword(node, "shell").value:
        out.append(f"{where}: shell=True")
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                              and node.module else [])
      if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal", "shelve")
             for n in names):
        out.append(f"{name}:{node.lineno}: imports {names}")
  return out


def test_no_source_unpickles_or_evaluates():
  assert len(SOURCES) > 50
  problems = [p for path in SOURCES
              for p in _problems(path.read_text(), str(path.relative_to(ROOT)))]
  assert not problems, problems


@pytest.mark.parametrize("snippet,found", [
    ("import pickle\npickle.load(open('x', 'rb'))", "pickle.load()"),
    ("eval(text)", "eval()"),
    ("np.load('a.npy', allow_pickle=True)", "allow_pickle=True"),
    ("torch.load('m.pt')", "torch.load without weights_only=True"),
    ("subprocess.run(cmd, shell=True)", "shell=True"),
])
def test_the_scan_finds_each_unsafe_call(snippet, found):
  assert any(found in p for p in _problems(snippet, "probe.py"))
