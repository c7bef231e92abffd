"""The one answer checker (jaxllm/data/answers.py): number parsing, the final answer in both
styles, refusals, the score eval and RL both use, the format check; and every reply the world
writes scores 1 against its own answer."""

import pytest

from jaxllm.data import answers, world

IDK = answers.REFUSAL


@pytest.mark.parametrize("text,value", [
    ("1,234", 1234.0), ("-5", -5.0), ("+3", 3.0), ("3.50", 3.5), (".5", 0.5), ("$12", 12.0),
    ("-$4", -4.0), ("$-4", -4.0), ("\u22127", -7.0), ("12 apples", 12.0), ("12.", 12.0),
    (" 1,200.75 ", 1200.75), ("- 5", -5.0), ("1,23", None), ("1.2.3", None), ("abc", None),
    ("", None), ("12,34,567", None), ("five", None)])
def test_parse_number(text, value):
  assert answers.parse_number(text) == value


def test_final_answer_reads_the_last_answer_line_or_tag():
  reply = "Cost: 3 * 4 = 12.\nThe answer is 1,200.\n"
  assert answers.final_answer(reply) == "1,200"
  assert answers.final_answer("the answer is: $4.50. Done") == "$4.50"
  assert answers.final_answer("The answer is 3.\nNo wait. The answer is 5.") == "5"
  assert answers.final_answer("I think 12.") is None
  assert answers.final_answer("<answer> 7 </answer>", "tag") == "7"
  assert answers.final_answer("<answer>1</answer> then <answer>2</answer>", "tag") == "2"
  assert answers.final_answer("The answer is 7.", "tag") is None
  with pytest.raises(ValueError, match="boxed"):
    answers.final_answer("x", "boxed")


def test_score_compares_numbers_by_value_and_handles_refusals():
  assert answers.score("Total: 1200.\nThe answer is 1,200.", "1200") == 1.0
  assert answers.score("The answer is 1200.0.", "1,200") == 1.0
  assert answers.score("The answer is -3.", "3") == 0.0
  assert answers.score("The answer is Oslo.", "oslo") == 1.0
  assert answers.score("12", "12") == 0.0  # no final answer line
  assert answers.score("I don't know.", "I don't know") == 1.0
  assert answers.score("I don't know.", "4") == 0.0
  assert answers.score("The answer is 4.", "I don't know") == 0.0
  assert answers.score("<answer>4</answer>", "4", style="tag") == 1.0


def test_format_reward():
  assert answers.well_formatted("a = 1 + 2 = 3.\nThe answer is 3.") == 1.0
  assert answers.well_formatted("I don't know.") == 1.0
  assert answers.well_formatted("The answer is 3. And more text") == 0.0
  assert answers.well_formatted("The answer is 3.\nThe answer is 4.") == 0.0
  assert answers.well_formatted("The answer is .") == 0.0
  assert answers.well_formatted("") == 0.0
  assert answers.well_formatted("work\n<answer>3</answer>", "tag") == 1.0
  assert answers.well_formatted("<answer>3</answer> trailing", "tag") == 0.0


def test_extract_answer_refusal_and_score_on_crafted_replies():
  assert answers.extract_answer("4 + 5 = 9.\nThe answer is 9.") == "9"
  assert answers.extract_answer("the answer is: 1,200 coins") == "1200"
  assert answers.extract_answer("The answer is 3.50.") == "3.5"
  assert answers.extract_answer("The answer is Oslo.") == "oslo"
  assert answers.extract_answer("The answer is a baker.") == "baker"
  assert answers.extract_answer("The answer is 7.\nNo wait.\nThe answer is 8.") == "8"
  assert answers.extract_answer("The answer is 42. I am sure.") == "42"
  assert answers.extract_answer("It is 42.") is None
  assert answers.extract_answer("The answer is .") is None
  assert answers.is_refusal("I have no record of him.\nI don't know.")
  assert answers.is_refusal("I don\u2019t know")
  assert answers.is_refusal("The answer is I don't know.")
  assert not answers.is_refusal("I don't know at first.\nThe answer is 5.")
  assert not answers.is_refusal("The answer is 5.")
  assert answers.score("2 * 21 = 42.\nThe answer is 42.", "42") == 1.0
  assert answers.score("The answer is 41.", "42") == 0.0
  assert answers.score("42", "42") == 0.0  # no final-answer line
  assert answers.score("The answer is OSLO", "Oslo") == 1.0
  assert answers.score("I don't know.", "42") == 0.0
  assert answers.score("I don't know.", IDK) == 1.0
  assert answers.score("The answer is Oslo.", IDK) == 0.0
  assert answers.score("Nothing.", IDK) == 0.0


def test_every_world_reply_scores_its_answer_and_a_changed_answer_fails():
  data = world.generate(0)
  for record in data["train"]["sft"][:300]:
    reply, answer = record["messages"][-1]["content"], record["meta"]["answer"]
    assert answers.score(reply, answer) == 1.0, reply
    if answer != IDK:
      wrong = reply.replace(f"The answer is {answer}", "The answer is 987654")
      assert answers.score(wrong, answer) == 0.0, wrong
