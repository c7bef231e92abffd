"""Masks e-mail addresses and public IP addresses with fixed placeholders, as datatrove does."""

import dataclasses
import ipaddress
import re

from jaxllm.data.readers import Document

# datatrove PIIFormatter replacements, used in turn within a document.
EMAIL_REPLACEMENTS = ("email@example.com", "firstname.lastname@example.org")
IP_REPLACEMENTS = ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206",
                   "220.127.116.11", "18.104.22.168")

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL = re.compile(rf"\b{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_LABEL}")
# Runs of dotted numbers; a run is an IPv4 address when it has four parts of 0-255 (so version
# strings such as 1.2.3.4.5 are left alone). Scanning for runs is ~4x faster than an octet regex.
DOTTED_NUMBERS = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(?:\.[0-9]+)*")


def _is_ipv4(run: str, text: str, start: int) -> bool:
  parts = run.split(".")
  return (len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts)
          and not (start and text[start - 1] in ".0123456789"))


def _is_public(ip: str) -> bool:
  return ipaddress.ip_address(ip).is_global


def _mask(pattern: re.Pattern, text: str, replacements: tuple[str, ...], should_mask) -> str:
  """Replaces matches for which should_mask(match) holds, cycling through `replacements`."""
  count = 0

  def replace(match):
    nonlocal count
    if not should_mask(match):
      return match.group()
    count += 1
    return replacements[(count - 1) % len(replacements)]

  return pattern.sub(replace, text)


@dataclasses.dataclass(frozen=True)
class PiiMasker:
  """Replaces e-mails and (public) IPv4 addresses; never drops a document.

  | field                 | default            | datatrove PIIFormatter   |
  |-----------------------|--------------------|--------------------------|
  | remove_emails         | True               | remove_emails            |
  | remove_ips            | True               | remove_ips               |
  | only_remove_public_ips| True               | only_remove_public_ips   |
  | email_replacement     | EMAIL_REPLACEMENTS | email_replacement        |
  | ip_replacement        | IP_REPLACEMENTS    | ip_replacement           |

  Placeholders are used in turn, restarting in each document (so output does not depend on how
  documents are split across workers; datatrove keeps one counter per process).
  """
  remove_emails: bool = True
  remove_ips: bool = True
  only_remove_public_ips: bool = True
  email_replacement: tuple[str, ...] = EMAIL_REPLACEMENTS
  ip_replacement: tuple[str, ...] = IP_REPLACEMENTS

  def __call__(self, doc: Document) -> None:
    text = doc.text
    if self.remove_emails and "@" in text:
      text = _mask(EMAIL, text, tuple(self.email_replacement), lambda m: True)
    if self.remove_ips:
      def is_ip(m):
        return (_is_ipv4(m.group(), m.string, m.start())
                and (not self.only_remove_public_ips or _is_public(m.group())))
      text = _mask(DOTTED_NUMBERS, text, tuple(self.ip_replacement), is_ip)
    if text != doc.text:
      doc.text = text
