"""Expected errors: bad input that the user can fix.

The CLI turns a `UserError` into one line on stderr (`llmlab: <message>`) and exit code 2, with no
traceback. Anything else is a bug and keeps its traceback. Messages name the file/line/key at fault
and say what to do.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a missing file, an unknown key, a malformed line). One line, exit code 2."""
