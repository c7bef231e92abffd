"""FineWeb-style text cleaning: filters, HTML extraction, PII masking, dedup, and the runner.

A step is a callable `step(doc) -> reason | None`: a reason string drops the document (its first
word is the counted key, e.g. "dup_line_frac (0.41 > 0.3)"), None keeps it. Steps may edit
`doc.text` (C4 removes lines, PII masks, HTML extracts) or `doc.metadata` (language id).
"""
