"""The labeling web app: one page that shows a prompt and its responses, and a JSON API.

`make_app(store, items)` builds a Flask app over a JudgementStore and the items to rank
(jaxllm/labeling/store.py); it needs no model, so tests drive it with Flask's test client.

  GET  /                          the page (page.html, shipped with the package)
  GET  /api/next?labeler=ID       {"item": {...} | null, "progress": {...}}
  GET  /api/progress?labeler=ID   {"labeler", "done", "skipped", "total"}
  POST /api/judgements            {"prompt_id", "labeler", "ranking", "note"?} -> {"ok", "progress"}
  POST /api/skip                  {"prompt_id", "labeler"} -> {"ok", "progress"}
  GET  /api/agreement[?labelers=a,b]  Cohen's kappa per pair of labelers, Fleiss' over all

Every judgement is on disk (appended, fsynced) before its answer leaves. Bad requests get 400
with {"error": message, "field": name}; a body over 64 KiB gets 413, a Host header other than the
served address 400 (DNS rebinding). Model text only ever travels as JSON strings and the page
inserts it with textContent; the page's Content-Security-Policy also allows only its own
nonce-tagged script. POST bodies must be application/json, which a cross-site form cannot send
(and a cross-site fetch of it needs a CORS preflight this app never grants).
"""

import importlib.resources
import secrets
from collections.abc import Sequence

import flask
import markupsafe
import werkzeug.exceptions

from jaxllm.labeling import agreement as agreement_lib
from jaxllm.labeling import store as labels
from jaxllm.labeling.store import Item, JudgementStore, LabelError

PAGE = "page.html"


def page_html() -> str:
  return importlib.resources.files("jaxllm.labeling").joinpath(PAGE).read_text(encoding="utf-8")


def _bad(error: LabelError):
  return flask.jsonify({"error": str(error), "field": error.field}), 400


MAX_BODY_BYTES = 64 * 1024  # a judgement is a ranking and a note: far less


def make_app(store: JudgementStore, items: Sequence[Item], title: str = "jaxllm labeling",
             hosts: Sequence[str] | None = None) -> flask.Flask:
  """The Flask app serving `items` (in this order) and writing judgements to `store`.

  `hosts`: the host names it answers (the address it serves, e.g. "127.0.0.1", "localhost"; the
  port is not compared); a request whose Host header names another gets 400, so a page of
  another site cannot reach it through a DNS name rebound to this machine. None (or empty)
  answers any host (tests' own client).
  """
  app = flask.Flask(__name__)
  app.json.sort_keys = False
  app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # larger bodies get 413
  if hosts is not None:
    app.config["TRUSTED_HOSTS"] = list(hosts)
  by_id = {item.id: item for item in items}
  if len(by_id) != len(items):
    raise ValueError("item ids must be unique.")
  position = {item.id: i + 1 for i, item in enumerate(items)}
  template = page_html()

  def item_json(item: Item) -> dict:
    return {"id": item.id, "prompt": item.prompt, "prompt_text": labels.prompt_text(item.prompt),
            "responses": list(item.responses), "position": position[item.id]}

  def labeler_arg() -> str:
    labeler = flask.request.args.get("labeler", "").strip()
    if not labeler:
      raise LabelError("labeler", "the query needs ?labeler=YOUR_ID (non-empty).")
    if len(labeler) > labels.MAX_LABELER_CHARS:
      raise LabelError("labeler", f"is longer than {labels.MAX_LABELER_CHARS} characters.")
    return labeler

  def body_item() -> tuple[dict, Item]:
    if not flask.request.is_json:
      raise LabelError("body", "send a JSON object with Content-Type: application/json.")
    try:
      body = flask.request.get_json(silent=True)
    except RecursionError:  # JSON nested thousands deep
      raise LabelError("body", "is nested too deeply; send a flat JSON object.") from None
    if not isinstance(body, dict):
      raise LabelError("body", "must be a JSON object.")
    pid = body.get("prompt_id")
    if not isinstance(pid, str) or pid not in by_id:
      raise LabelError("prompt_id", f"{str(pid)[:80]!r} is not the id of a prompt served here.")
    return body, by_id[pid]

  @app.errorhandler(LabelError)
  def label_error(error):
    return _bad(error)

  @app.errorhandler(werkzeug.exceptions.HTTPException)
  def http_error(error):  # 400 (an unknown Host), 404, 405, 413: JSON like every other answer
    return flask.jsonify({"error": error.description, "field": None}), error.code

  @app.after_request
  def headers(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

  @app.get("/")
  def page():
    nonce = secrets.token_urlsafe(16)
    html = template.replace("{{nonce}}", nonce).replace("{{title}}", str(markupsafe.escape(title)))
    response = flask.Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")
    return response

  @app.get("/api/next")
  def next_item():
    labeler = labeler_arg()
    item = store.next_item(items, labeler)
    return flask.jsonify({"item": None if item is None else item_json(item),
                          "progress": store.progress(items, labeler)})

  @app.get("/api/progress")
  def progress():
    return flask.jsonify(store.progress(items, labeler_arg()))

  @app.post("/api/judgements")
  def judge():
    body, item = body_item()
    record = labels.make_judgement(item, body)
    store.append(record)
    return flask.jsonify({"ok": True, "progress": store.progress(items, record["labeler"])})

  @app.post("/api/skip")
  def skip():
    body, item = body_item()
    record = labels.make_judgement(item, body, skip=True)
    store.append(record)
    return flask.jsonify({"ok": True, "progress": store.progress(items, record["labeler"])})

  @app.get("/api/agreement")
  def agreement():
    names = flask.request.args.get("labelers", "")
    chosen = [n.strip() for n in names.split(",") if n.strip()] or None
    return flask.jsonify(agreement_lib.agreement(store.snapshot(), chosen))

  return app
