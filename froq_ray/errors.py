"""The one base of every error that means "the user must fix something".

The ``froq`` command catches :class:`UserError` (and nothing narrower) and prints its message on one line with
exit code 2; anything else is a bug and keeps its traceback. Every module that raises such an error subclasses
this base, so a new error type never needs registering anywhere.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's inputs, config, credentials or environment; the message says how to fix it."""
