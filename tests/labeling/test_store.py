"""Human preference labels: rankings, the judgement store (append, resume, a torn last line),
export to preference pairs (read back by the preference stages' reader)."""

import json

import pytest

from jaxllm.data import preferences, sources
from jaxllm.data.tokenizer import SPECIAL_TOKENS, train_tokenizer
from jaxllm.errors import UserError
from jaxllm.labeling import store as labels
from jaxllm.labeling.store import Item, JudgementStore, LabelError

ITEMS = [Item("a", "Q1?", ("r0", "r1", "r2")), Item("b", "Q2?", ("s0", "s1")),
         Item("c", [{"role": "user", "content": "Q3?"}], ("t0", "t1", "t2", "t3"))]


def judge(item, ranking, labeler="ann", note=""):
  return labels.make_judgement(item, {"ranking": ranking, "labeler": labeler, "note": note})


def test_rankings_are_partitions_of_the_responses():
  assert labels.normalize_ranking([2, 0, 1], 3) == [[2], [0], [1]]
  assert labels.normalize_ranking([[1], [2, 0]], 3) == [[1], [0, 2]]
  for bad in ([0, 1], [0, 0, 1], [[0], [1], [3]], [], "0,1,2", [[0, 1], []], [[0], [1], [True]]):
    with pytest.raises(LabelError) as e:
      labels.normalize_ranking(bad, 3)
    assert e.value.field == "ranking"
  assert labels.pair_labels([[1], [0, 2]]) == {(0, 1): "second", (0, 2): "tie",
                                               (1, 2): "first"}
  with pytest.raises(LabelError, match="labeler"):
    labels.make_judgement(ITEMS[0], {"ranking": [0, 1, 2], "labeler": "  "})
  with pytest.raises(LabelError, match="note"):
    judge(ITEMS[0], [0, 1, 2], note="x" * (labels.MAX_NOTE_CHARS + 1))


def test_store_appends_resumes_and_cuts_a_torn_last_line(tmp_path):
  path = tmp_path / "labels" / "judgements.jsonl"
  store = JudgementStore(path)
  assert store.next_item(ITEMS, "ann").id == "a"
  store.append(judge(ITEMS[0], [[0], [1, 2]]))
  store.append(labels.make_judgement(ITEMS[1], {"labeler": "ann"}, skip=True))
  assert store.next_item(ITEMS, "ann").id == "c"  # skipped items come back last
  assert store.next_item(ITEMS, "bob").id == "a"  # labelers progress on their own
  # "Killed": a new store on the same file sees everything.
  again = JudgementStore(path)
  assert len(again.records) == 2 and again.records[0]["ranking"] == [[0], [1, 2]]
  assert again.progress(ITEMS, "ann") == {"labeler": "ann", "done": 1, "skipped": 1, "total": 3}
  again.append(judge(ITEMS[2], [3, 2, 1, 0]))
  assert again.next_item(ITEMS, "ann").id == "b"
  # A write cut short: the partial line is moved to .torn, the file stays valid JSONL.
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"prompt_id": "b", "labe')
  records, torn = labels.read_jsonl(path)
  assert len(records) == 3 and torn.startswith('{"prompt_id"')
  resumed = JudgementStore(path)
  assert resumed.torn and len(resumed.records) == 3
  assert (tmp_path / "labels" / "judgements.jsonl.torn").read_text().startswith('{"prompt_id"')
  resumed.append(judge(ITEMS[1], [1, 0]))
  assert len(JudgementStore(path).records) == 4 and resumed.next_item(ITEMS, "ann") is None
  # A malformed line that is not the last one is an edit, named by file:line.
  lines = path.read_text().splitlines()
  path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
  with pytest.raises(UserError, match=r"judgements.jsonl:2: not valid JSON"):
    JudgementStore(path)


def test_export_gives_k_choose_2_pairs_in_order_and_ties_as_configured():
  for k, expected in [(2, 1), (3, 3), (4, 6)]:
    item = Item(f"k{k}", "Q?", tuple(f"r{i}" for i in range(k)))
    pairs, counts = labels.export_pairs([judge(item, list(reversed(range(k))))])
    assert len(pairs) == expected == counts["pairs"]
    assert all(int(p["chosen"][1:]) > int(p["rejected"][1:]) for p in pairs)
  tied = [judge(ITEMS[0], [[1], [0, 2]])]
  pairs, counts = labels.export_pairs(tied)
  assert [(p["chosen"], p["rejected"]) for p in pairs] == [("r1", "r0"), ("r1", "r2")]
  assert counts["ties_dropped"] == 1 and all("margin" not in p for p in pairs)
  assert pairs[0]["labeler"] == "ann" and pairs[0]["prompt_id"] == pairs[0]["id"] == "a"
  pairs, counts = labels.export_pairs(tied, ties="keep")
  kept = [(p["chosen"], p["rejected"]) for p in pairs if p.get("tie")]
  assert kept == [("r0", "r2"), ("r2", "r0")] and counts["tied_pairs"] == 1
  assert all(p["margin"] == 0 for p in pairs if p.get("tie"))
  # The newest ranking of a labeler counts; skips and identical responses give no pairs.
  same = Item("d", "Q?", ("x", "x", "y"))
  pairs, counts = labels.export_pairs([judge(ITEMS[1], [0, 1]), judge(ITEMS[1], [1, 0]),
                                       labels.make_judgement(ITEMS[0], {"labeler": "ann"},
                                                             skip=True),
                                       judge(same, [0, 1, 2])])
  assert [(p["chosen"], p["rejected"]) for p in pairs if p["prompt_id"] == "b"] == [("s1", "s0")]
  assert counts["identical"] == 1 and counts["judgements"] == 2
  with pytest.raises(UserError, match="--ties"):
    labels.export_pairs([], ties="maybe")


def test_exported_pairs_read_as_preference_source(tmp_path):
  """What experiments/reward_model.py and dpo.py do with config.data.source=FILE."""
  pairs, _ = labels.export_pairs([judge(ITEMS[0], [[2], [0, 1]]), judge(ITEMS[2], [0, 1, 2, 3]),
                                  judge(ITEMS[1], [1, 0], labeler="bob")], ties="keep")
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
  source = sources.open_source(str(path), "preferences", "train", data_dir=tmp_path / "data")
  assert len(source) == len(pairs) == 2 + 2 + 6 + 1
  tok = train_tokenizer(["x"], vocab_size=len(SPECIAL_TOKENS) + 256)
  to_row = preferences.pair_example(tok, 48)
  records = [source[i] for i in range(len(source))]
  assert {r["chosen"] for r in records} >= {"r2", "t0", "s1"}
  for record in records:
    row = to_row(record)
    assert row["margin"] == 0.0 and row["truncated"] == 0.0
    for side in ("chosen", "rejected"):  # each row holds the pair's own prompt and reply
      ids, _ = preferences.render_reply(tok, record["prompt"], record[side])
      assert row[f"{side}_valid"].sum() == len(ids)
      assert row[f"{side}_tokens"][:len(ids)].tolist() == ids
