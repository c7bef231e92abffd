"""What `pip install .` ships: every folder of jaxllm/ holding Python is a package (recipes, the
workflow and labeling included), and its data files (the labeling page, the GPU descriptions)
go with it as package data."""

import ast
import pathlib

import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_source_folder_is_a_package_setup_py_ships():
  shipped = set(setuptools.find_packages(where=ROOT, include=["jaxllm", "jaxllm.*"]))
  folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jaxllm").rglob("*.py")}
  assert folders == shipped, folders ^ shipped
  assert {"jaxllm.recipes", "jaxllm.workflow", "jaxllm.labeling"} <= shipped


def test_every_data_file_is_package_data():
  """The labeling page and the GPU descriptions (every file under jaxllm/ that is not Python)
  match a package_data pattern of their package in setup.py."""
  setup = ast.parse((ROOT / "setup.py").read_text())
  package_data = next(ast.literal_eval(k.value) for node in ast.walk(setup)
                      if isinstance(node, ast.Call) for k in node.keywords
                      if k.arg == "package_data")
  data = [p for p in (ROOT / "jaxllm").rglob("*") if p.is_file() and p.suffix not in (
      ".py", ".pyc") and "__pycache__" not in p.parts]
  assert {p.name for p in data} >= {"page.html", "h100.txtpb"}
  for path in data:
    package = path.parent
    while not (package / "__init__.py").is_file():
      package = package.parent
    name = ".".join(package.relative_to(ROOT).parts)
    relative = path.relative_to(package)
    assert any(relative.match(pattern) for pattern in package_data.get(name, [])), path
