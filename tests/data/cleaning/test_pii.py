"""PII masking: e-mails and public IPv4 addresses become datatrove's placeholders, in turn."""

from jaxllm.data.cleaning import pii
from jaxllm.data.readers import Document


def _mask(text, **kw):
  doc = Document(text, "d")
  assert pii.PiiMasker(**kw)(doc) is None  # never drops
  return doc.text


def test_emails_and_public_ips_are_masked_in_turn():
  text = ("Write to jane.doe+news@mail.example.com or bob@site.org, or a@b.io. Servers 8.8.8.8, "
          "1.1.1.1 and 9.9.9.9 answer; 10.0.0.1, 192.168.1.20 and 127.0.0.1 are private.")
  assert _mask(text) == (
      "Write to email@example.com or firstname.lastname@example.org, or email@example.com. "
      "Servers 22.214.171.124, 126.96.36.199 and 188.8.131.52 answer; 10.0.0.1, 192.168.1.20 "
      "and 127.0.0.1 are private.")
  assert _mask("hosts 10.0.0.1 and 8.8.8.8", only_remove_public_ips=False) == (
      "hosts 22.214.171.124 and 126.96.36.199")
  assert _mask("a@b.io 8.8.8.8", remove_emails=False, remove_ips=False) == "a@b.io 8.8.8.8"


def test_things_that_only_look_like_pii_stay():
  for text in ("version 1.2.3.4.5 and v2.10.300.4000", "256.1.1.1 is not an address",
               "an @ sign alone, user@localhost", "price 3.50 on 2024.01.02"):
    assert _mask(text) == text
