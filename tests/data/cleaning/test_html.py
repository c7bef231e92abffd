"""HTML extraction: main text out of raw pages; other documents pass untouched."""

from jaxllm.data.cleaning import html
from jaxllm.data.readers import Document

PAGE = """<html><head><title>T</title><script>var tracking = 1;</script>
<style>p {color: red}</style></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<article><h1>The harbour at dawn</h1>
<p>The fishing boats came back before sunrise, and the market opened early.</p>
<p>Everyone in the village went down to the water to watch.</p></article>
<footer>Copyright 2024. Privacy policy.</footer></body></html>"""


def test_extracts_main_content_and_marks_the_source():
  doc = Document(PAGE, "p.html", metadata={"format": "html"})
  assert html.HtmlExtractor()(doc) is None
  assert doc.text == ("The harbour at dawn\n\nThe fishing boats came back before sunrise, and the "
                      "market opened early.\n\nEveryone in the village went down to the water to "
                      "watch.")
  assert doc.metadata == {"extracted_from": "html"}
  everything = Document(PAGE, "p.html", metadata={"format": "html"})
  html.HtmlExtractor(main_content=False)(everything)
  assert "About us" in everything.text and "var tracking" not in everything.text


def test_plain_text_passes_and_empty_pages_drop():
  plain = Document("<b>not html input</b>", "a.txt")
  assert html.HtmlExtractor()(plain) is None and plain.text == "<b>not html input</b>"
  empty = Document("<html><body><script>x()</script></body></html>", "e.html",
                   metadata={"format": "html"})
  assert html.HtmlExtractor()(empty) == "html_no_text"
