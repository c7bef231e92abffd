"""No import cycles in jaxllm/: between modules, and between its packages (data, models, train,
...), counting imports inside functions too; packages import only lower layers (the order of
docs/architecture.md). The cycle finder is shown to find planted ones."""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxllm"
# Lowest first, as docs/architecture.md lists them: each imports only layers before it.
LAYERS = ("errors", "storage", "parallel", "models", "config", "rundir", "cli", "data", "compress",
          "objectives", "interop", "inference", "train", "runs", "eval", "rl", "labeling",
          "recipes", "workflow")


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """module -> the jaxllm modules it imports (`from jaxllm.a import b` names jaxllm.a.b when
  that is a module, else jaxllm.a), read from the source without importing it."""
  modules = {}
  for path in root.rglob("*.py"):
    name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    modules[name.removesuffix(".__init__")] = path
  graph = collections.defaultdict(set)
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxllm"):
        for alias in node.names:
          target = f"{node.module}.{alias.name}"
          graph[name].add(target if target in modules else node.module)
      elif isinstance(node, ast.Import):
        graph[name].update(a.name for a in node.names if a.name.startswith("jaxllm"))
    graph[name].discard(name)
  return {name: graph[name] & set(modules) for name in modules}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """The same between packages: jaxllm.train imports jaxllm.models when any module does."""
  package = lambda m: ".".join(m.split(".")[:2])
  out = collections.defaultdict(set)
  for source, targets in graph.items():
    out[package(source)].update(package(t) for t in targets if package(t) != package(source))
  return dict(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one node (Tarjan), each sorted."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in graph.get(node, ()):
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def test_no_module_imports_itself_through_others():
  graph = import_graph()
  assert "jaxllm.runs" in graph and "jaxllm.train.loop" in graph["jaxllm.recipes.sft"]
  assert cycles(graph) == []


def test_no_package_imports_itself_through_others():
  assert cycles(package_graph(import_graph())) == []


def test_packages_import_only_lower_layers():
  graph = package_graph(import_graph())
  layer = {f"jaxllm.{name}": i for i, name in enumerate(LAYERS)}
  assert set(graph) - {"jaxllm"} == set(layer), "add the new package to LAYERS and the docs"
  upward = [(source, target) for source, targets in graph.items() if source in layer
            for target in targets if target in layer and layer[target] >= layer[source]]
  assert upward == []


def test_the_finder_finds_planted_cycles(tmp_path):
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  package = tmp_path / "jaxllm"
  (package / "one").mkdir(parents=True)
  (package / "two").mkdir()
  for path in (package, package / "one", package / "two"):
    (path / "__init__.py").write_text("")
  (package / "one" / "x.py").write_text("def f():\n  from jaxllm.two import y\n")
  (package / "two" / "y.py").write_text("from jaxllm.one import x\n")
  graph = import_graph(package)
  assert cycles(graph) == [["jaxllm.one.x", "jaxllm.two.y"]]
  assert cycles(package_graph(graph)) == [["jaxllm.one", "jaxllm.two"]]
