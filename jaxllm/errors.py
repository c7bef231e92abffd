"""User-facing errors: the CLI prints these without a traceback and exits non-zero."""


class UserError(Exception):
  """A mistake the user can fix (bad config, bad file, bad line); the message says how."""


class ConfigError(UserError, ValueError):
  """A config field has a bad value; the message names the field and the fix."""
