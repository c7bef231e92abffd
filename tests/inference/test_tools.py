"""Calculator safety and arithmetic; the registry turns every failure into an error text."""

import pytest

from jaxllm.inference import tools


@pytest.mark.parametrize("expression,expected", [
    ("12 * (3 + 4)", "84"), ("7 / 2", "3.5"), ("2 ** 10", "1024"), ("-3 + +5", "2"),
    ("1,250 + 3,000", "4250"), ("6 x 7", "42"), ("6 × 7", "42"), ("9 ÷ 3", "3"), ("2^5", "32"),
    ("10 // 3", "3"), ("10 % 3", "1"), ("0.1 + 0.2", "0.3"), ("1e3 * 2", "2000"),
    ("(((4)))", "4"), ("2 * 3.0", "6"),
])
def test_calculator_arithmetic(expression, expected):
  assert tools.calculate(expression) == expected


@pytest.mark.parametrize("expression,message", [
    ("__import__('os').system('touch /tmp/pwned')", "only numbers"),
    ("open('/etc/passwd').read()", "only numbers"),
    ("(lambda: 1)()", "only numbers"),
    ("[1, 2][0]", "only numbers"),
    ("x + 1", "only numbers"),
    ("'a' * 3", "only numbers"),
    ("1 if 1 else 2", "only numbers"),
    ("2 ** 1000", "exponent"),
    ("10 ** 10 ** 10", "exponent"),
    ("9 ** 64 * 9 ** 64", "out of range"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("(-8) ** 0.5", "out of range"),
    ("1 +", "cannot parse"),
    ("", "non-empty"),
    ("1" * 300, "longer than"),
    ("1e308 * 10", "out of range"),
])
def test_calculator_refuses_anything_else(expression, message, tmp_path):
  with pytest.raises(tools.ToolError, match=message):
    tools.calculate(expression)


def test_calculator_never_runs_code(tmp_path):
  target = tmp_path / "pwned"
  registry = tools.default_registry()
  result = registry.run({"name": "calculator", "arguments": {
      "expression": f"__import__('pathlib').Path('{target}').touch()"}})
  assert result.startswith("error:") and not target.exists()


def test_registry_errors_are_messages_not_exceptions():
  def broken(arguments):
    raise RuntimeError("disk on fire")

  registry = tools.ToolRegistry((tools.CALCULATOR, tools.Tool("broken", "fails", broken)))
  assert registry.run({"name": "calculator", "arguments": {"expression": "2+2"}}) == "4"
  assert registry.run({"name": "weather", "arguments": {}}) == (
      "error: unknown tool 'weather'; available: broken, calculator.")
  assert registry.run({"name": "calculator", "arguments": "2+2"}).startswith(
      "error: calculator takes a JSON object")
  assert registry.run({"name": "calculator", "arguments": {}}).startswith("error: give the")
  assert registry.run({"name": "broken", "arguments": {}}) == (
      "error: broken failed (RuntimeError: disk on fire).")
  assert "calculator: evaluates arithmetic" in registry.describe()
  with pytest.raises(ValueError, match="already registered"):
    registry.register(tools.CALCULATOR)
