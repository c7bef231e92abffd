"""What `pip install .` ships: every folder of jaxllm/ holding Python is a package (recipes, the
workflow and labeling included), and the labeling page goes with it as package data."""

import pathlib

import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_source_folder_is_a_package_setup_py_ships():
  shipped = set(setuptools.find_packages(where=ROOT, include=["jaxllm", "jaxllm.*"]))
  folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jaxllm").rglob("*.py")}
  assert folders == shipped, folders ^ shipped
  assert {"jaxllm.recipes", "jaxllm.workflow", "jaxllm.labeling"} <= shipped


def test_the_labeling_page_is_package_data():
  setup = (ROOT / "setup.py").read_text()
  assert 'package_data={"jaxllm.labeling": ["page.html"]}' in setup
  assert (ROOT / "jaxllm" / "labeling" / "page.html").is_file()
