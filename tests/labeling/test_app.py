"""The labeling app: its JSON API through Flask's test client (next item per labeler, submit,
skip, progress, 400s naming the field, agreement), model text kept as text, and one end-to-end
run in headless Chromium (Selenium) that ranks two prompts by clicks and keys."""

import json
import shutil
import threading

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug import serving

from jaxllm.labeling import app as labeling
from jaxllm.labeling.store import Item, JudgementStore

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ITEMS = [Item("a", "Which is kind?", ("plain answer", HOSTILE, "third & <b>bold</b>")),
         Item("b", [{"role": "user", "content": "Q2?"}], ("yes", "no"))]


@pytest.fixture
def app_and_path(tmp_path):
  path = tmp_path / "labels" / "judgements.jsonl"
  return labeling.make_app(JudgementStore(path), ITEMS), path


def post(client, url, body):
  return client.post(url, data=json.dumps(body), content_type="application/json")


def test_next_submit_skip_progress_and_resume(app_and_path):
  app, path = app_and_path
  client = app.test_client()
  first = client.get("/api/next?labeler=ann").get_json()
  assert first["item"]["id"] == "a" and first["item"]["responses"][1] == HOSTILE
  assert first["progress"] == {"labeler": "ann", "done": 0, "skipped": 0, "total": 2}
  done = post(client, "/api/judgements", {"prompt_id": "a", "labeler": "ann",
                                          "ranking": [[2], [0, 1]], "note": "close call"})
  assert done.status_code == 200 and done.get_json()["progress"]["done"] == 1
  record = json.loads(path.read_text().splitlines()[0])  # on disk before the answer
  assert record["ranking"] == [[2], [0, 1]] and record["responses"][1] == HOSTILE
  assert record["labeler"] == "ann" and record["note"] == "close call" and record["time"]
  nxt = client.get("/api/next?labeler=ann").get_json()["item"]
  assert nxt["id"] == "b" and nxt["prompt_text"] == "user: Q2?"
  assert client.get("/api/next?labeler=bob").get_json()["item"]["id"] == "a"
  assert post(client, "/api/skip", {"prompt_id": "b", "labeler": "ann"}).status_code == 200
  assert client.get("/api/progress?labeler=ann").get_json()["skipped"] == 1
  post(client, "/api/judgements", {"prompt_id": "b", "labeler": "ann", "ranking": [1, 0]})
  # A restarted server (a new store on the same file) continues where ann stopped.
  again = labeling.make_app(JudgementStore(path), ITEMS).test_client()
  assert again.get("/api/next?labeler=ann").get_json() == {
      "item": None, "progress": {"labeler": "ann", "done": 2, "skipped": 0, "total": 2}}
  post(again, "/api/judgements", {"prompt_id": "a", "labeler": "bob", "ranking": [[2], [0, 1]]})
  agreement = again.get("/api/agreement").get_json()
  assert agreement["pairs"][0]["labelers"] == ["ann", "bob"]
  assert agreement["pairs"][0]["items"] == 3 and agreement["pairs"][0]["cohen_kappa"] == 1.0


@pytest.mark.parametrize("body, field", [
    ([1, 2], "body"),
    ({"prompt_id": "zzz", "labeler": "ann", "ranking": [0, 1]}, "prompt_id"),
    ({"prompt_id": "b", "labeler": "", "ranking": [0, 1]}, "labeler"),
    ({"prompt_id": "b", "labeler": "x" * 65, "ranking": [0, 1]}, "labeler"),
    ({"prompt_id": "b", "labeler": "ann", "ranking": [0, 0]}, "ranking"),
    ({"prompt_id": "b", "labeler": "ann", "ranking": [[0], [1], [2]]}, "ranking"),
    ({"prompt_id": "b", "labeler": "ann"}, "ranking"),
    ({"prompt_id": "b", "labeler": "ann", "ranking": [0, 1], "note": 5}, "note"),
])
def test_bad_requests_get_400_naming_the_field(app_and_path, body, field):
  app, path = app_and_path
  answer = post(app.test_client(), "/api/judgements", body)
  assert answer.status_code == 400 and answer.get_json()["field"] == field
  assert answer.get_json()["error"].startswith(field) and not path.exists()


def test_bounded_requests_a_foreign_host_and_deep_json_get_4xx_not_500(tmp_path):
  app = labeling.make_app(JudgementStore(tmp_path / "j.jsonl"), ITEMS,
                          hosts=["127.0.0.1", "localhost"])
  client = app.test_client()
  ok = client.get("/api/progress?labeler=ann", headers={"Host": "127.0.0.1:8080"})
  assert ok.status_code == 200
  # DNS rebinding: another site's name pointed at this machine.
  foreign = client.get("/api/progress?labeler=ann", headers={"Host": "evil.example:8080"})
  assert foreign.status_code == 400 and "error" in foreign.get_json()
  big = client.post("/api/judgements", data="{" + " " * 70_000 + "}",
                    content_type="application/json", headers={"Host": "localhost:8080"})
  assert big.status_code == 413 and "error" in big.get_json()
  deep = client.post("/api/judgements", data="[" * 30_000 + "]" * 30_000,  # under 64 KiB
                     content_type="application/json", headers={"Host": "localhost:8080"})
  assert deep.status_code == 400 and deep.get_json()["field"] == "body"
  assert not (tmp_path / "j.jsonl").exists()


def test_json_only_and_model_text_is_never_html(app_and_path):
  app, _ = app_and_path
  client = app.test_client()
  # A cross-site form can send text/plain, never application/json: refused.
  form = client.post("/api/judgements", data='{"prompt_id": "a"}', content_type="text/plain")
  assert form.status_code == 400 and form.get_json()["field"] == "body"
  assert client.get("/api/next").get_json()["field"] == "labeler"
  item = client.get("/api/next?labeler=ann")
  assert item.mimetype == "application/json" and item.get_json()["item"]["responses"][1] == HOSTILE
  page = client.get("/")
  html = page.get_data(as_text=True)
  for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
    assert sink not in html
  assert "textContent = text" in html
  csp = page.headers["Content-Security-Policy"]
  nonce = csp.split("'nonce-")[1].split("'")[0]
  assert f'<script nonce="{nonce}">' in html and "default-src 'none'" in csp


def _browser_paths() -> tuple[str, str]:
  browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                  "google-chrome"))), None)
  driver = shutil.which("chromedriver")
  if browser is None or driver is None:
    pytest.fail("the browser test needs Chromium and its driver: install them with "
                "`sudo apt-get install -y chromium chromium-driver` (Debian/Ubuntu; .ci/run "
                "does it), then run the tests again.")
  return browser, driver


def test_a_missing_browser_fails_with_how_to_install(monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name: None)
  with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
    _browser_paths()


@pytest.mark.slow  # a real browser
def test_page_ranks_two_prompts_in_headless_chromium(tmp_path):
  browser, driver_path = _browser_paths()
  path = tmp_path / "judgements.jsonl"
  server = serving.make_server("127.0.0.1", 0, labeling.make_app(JudgementStore(path), ITEMS),
                               threaded=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  options = webdriver.ChromeOptions()
  options.binary_location = browser
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
    options.add_argument(arg)
  driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
  try:
    wait = WebDriverWait(driver, 10)
    driver.get(f"http://127.0.0.1:{server.server_port}/")
    driver.find_element(By.ID, "labeler").send_keys("ann")
    driver.find_element(By.ID, "set-labeler").click()
    wait.until(lambda d: d.find_element(By.ID, "prompt").text == "Which is kind?")
    cards = driver.find_elements(By.CSS_SELECTOR, "#responses .response")
    assert [c.text for c in cards] == list(ITEMS[0].responses)  # the markup shows as text
    assert driver.execute_script(
        "return [document.querySelectorAll('img, b').length, document.scripts.length]") == [0, 1]
    with pytest.raises(NoAlertPresentException):
      driver.switch_to.alert.accept()
    assert "done 0 / 2" in driver.find_element(By.ID, "progress").text
    driver.find_elements(By.CSS_SELECTOR, "#responses .card")[1].click()  # the hostile is best
    worst = driver.find_elements(By.CSS_SELECTOR, "#responses .card")[0]
    ActionChains(driver).key_down(Keys.SHIFT).click(worst).key_up(Keys.SHIFT).perform()
    assert driver.find_element(By.ID, "ranking").text.splitlines() == [
        "#2", "1 not ranked yet", "#1"]  # submitting puts the last one in the gap
    driver.find_element(By.ID, "note").send_keys("markup wins")
    driver.find_element(By.ID, "submit").click()
    wait.until(lambda d: d.find_element(By.ID, "prompt").text == "user: Q2?")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("2")  # keys: #2 first, then #1, tie them, undo the tie, tie again, Enter
    body.send_keys("1")
    body.send_keys("t")
    body.send_keys("u")
    body.send_keys("t")
    assert driver.find_element(By.ID, "ranking").text == "#1 = #2"
    body.send_keys("\n")
    wait.until(lambda d: not d.find_element(By.ID, "finished").get_attribute("class"))
    assert "done 2 / 2" in driver.find_element(By.ID, "progress").text
    assert driver.execute_script("return localStorage.getItem('jaxllm.labeler')") == "ann"
  finally:
    driver.quit()
    server.shutdown()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r["prompt_id"], r["ranking"], r["labeler"]) for r in records] == [
      ("a", [[1], [2], [0]], "ann"), ("b", [[0, 1]], "ann")]
  assert records[0]["note"] == "markup wins" and records[0]["responses"][1] == HOSTILE
