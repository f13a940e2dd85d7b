"""One error vocabulary: every mistake a person can fix is a UserError, and this is where errors become messages."""

from __future__ import annotations

import logging

BLANK_CANVAS = "The canvas is blank: draw a digit."
UNEXPECTED = "Something went wrong on the server ({what}); please try again. The details are in the server's log."


class UserError(Exception):
    """A problem the person can fix (a setting, a file, a model choice); its message is plain words for them."""


def user_error_types() -> dict[str, type[UserError]]:
    """Every UserError class by name, so a training process can send one across a pipe and keep its meaning."""
    found, todo = {}, [UserError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def message(exc: BaseException, doing: str = "that") -> str:
    """What a person is told: a UserError's own words; for anything else a plain apology (details go to the log)."""
    if isinstance(exc, UserError):
        return str(exc)
    logging.getLogger("mnist_demo").error("unexpected error while %s", doing, exc_info=exc)
    return UNEXPECTED.format(what=doing)
