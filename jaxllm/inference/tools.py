"""Tools a model can call: a registry by name, a safe calculator, and the call runner.

A tool is a function of the call's JSON arguments (a dict) returning text for the model. Running
a call never raises: an unknown tool, bad arguments or a failing tool give an "error: ..." text,
which goes back to the model as the tool message.
"""

import ast
import dataclasses
import math
import operator
import re
from collections.abc import Callable, Mapping

ToolFn = Callable[[dict], str]


@dataclasses.dataclass(frozen=True)
class Tool:
  """A callable tool: its name, a one-line description for prompts, and the function."""
  name: str
  description: str
  fn: ToolFn


class ToolRegistry:
  """Tools by name."""

  def __init__(self, tools: tuple[Tool, ...] = ()):
    self._tools: dict[str, Tool] = {}
    for tool in tools:
      self.register(tool)

  def register(self, tool: Tool) -> None:
    if tool.name in self._tools:
      raise ValueError(f"a tool named {tool.name!r} is already registered.")
    self._tools[tool.name] = tool

  def names(self) -> list[str]:
    return sorted(self._tools)

  def describe(self) -> str:
    """One line per tool, for a system prompt."""
    return "\n".join(f"- {t.name}: {t.description}" for t in self._tools.values())

  def run(self, call: Mapping) -> str:
    """The tool's answer to a {"name", "arguments"} call, or an "error: ..." text."""
    name = call.get("name")
    if name not in self._tools:
      return f"error: unknown tool {name!r}; available: {', '.join(self.names()) or 'none'}."
    arguments = call.get("arguments")
    if not isinstance(arguments, dict):
      return f"error: {name} takes a JSON object of arguments, got {arguments!r}."
    try:
      return str(self._tools[name].fn(arguments))
    except ToolError as e:
      return f"error: {e}"
    except Exception as e:  # a tool bug must not end the conversation
      return f"error: {name} failed ({type(e).__name__}: {e})."


class ToolError(Exception):
  """A tool's complaint about its input, shown to the model."""


# ---------------------------------------------------------------------------------------------
# Calculator: arithmetic parsed with ast and evaluated by walking only arithmetic nodes.

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e18

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")


def _value(node: ast.AST) -> int | float:
  """Evaluates an arithmetic expression tree; ToolError on anything else."""
  if isinstance(node, ast.Constant) and type(node.value) in (int, float):
    return node.value
  if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
    return _UNARY[type(node.op)](_value(node.operand))
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    left, right = _value(node.left), _value(node.right)
    if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
      raise ToolError(f"exponent {right} is too large (at most {MAX_EXPONENT}).")
    if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
      raise ToolError("division by zero.")
    try:
      result = _BINARY[type(node.op)](left, right)
    except OverflowError:
      raise ToolError("the result is out of range.") from None
    if isinstance(result, complex) or abs(result) > MAX_MAGNITUDE:
      raise ToolError("the result is out of range.")
    return result
  what = type(node).__name__
  raise ToolError(f"only numbers, + - * / // % ** and parentheses are allowed (found {what}).")


def calculate(expression: str) -> str:
  """The value of an arithmetic expression as text ("12", "2.5"); ToolError if not arithmetic.

  Accepts x and × for times, ÷ for divide, ^ for power and 1,000-style thousands separators.
  Nothing is executed: the text is parsed into a syntax tree whose nodes are checked one by one.
  """
  if not isinstance(expression, str) or not expression.strip():
    raise ToolError("give the expression as a non-empty string.")
  if len(expression) > MAX_EXPRESSION_CHARS:
    raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters.")
  text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), expression)
  text = text.replace("×", "*").replace("÷", "/").replace("^", "**")
  text = re.sub(r"(?<=[\d)\s])[xX](?=[\d(\s])", "*", text)
  try:
    tree = ast.parse(text.strip(), mode="eval")
  except SyntaxError as e:
    raise ToolError(f"cannot parse {expression!r} ({e.msg}).") from None
  value = _value(tree.body)
  if isinstance(value, float):
    if not math.isfinite(value):
      raise ToolError("the result is not a finite number.")
    if value.is_integer():
      value = int(value)
    else:
      return f"{value:.10g}"
  return str(value)


CALCULATOR = Tool("calculator", 'evaluates arithmetic: {"expression": "12 * (3 + 4)"}',
                  lambda arguments: calculate(arguments.get("expression")))


def default_registry(retrieval_tool: Tool | None = None) -> ToolRegistry:
  """The calculator, plus retrieval when an index is given."""
  return ToolRegistry((CALCULATOR,) + ((retrieval_tool,) if retrieval_tool else ()))
