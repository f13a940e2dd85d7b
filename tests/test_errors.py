"""One error vocabulary: every fixable mistake is a UserError, and anything else reaches people as a plain apology."""

import logging

import pytest

from mnist_demo.checkpoint import CheckpointError
from mnist_demo.data import DataError
from mnist_demo.errors import UNEXPECTED, UserError, message, user_error_types
from mnist_demo.preprocess import ImageError
from mnist_demo.train import ConfigError, TrainingDiverged
from mnist_demo.worker import WorkerError, _as_exception

USER_ERRORS = [ConfigError, TrainingDiverged, DataError, CheckpointError, ImageError, WorkerError]


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_every_user_facing_error_is_a_user_error_and_is_registered(cls):
    assert issubclass(cls, UserError)
    assert user_error_types()[cls.__name__] is cls


def test_the_registry_holds_only_user_errors_under_their_own_names():
    found = user_error_types()
    assert found["UserError"] is UserError
    assert set(found) >= {cls.__name__ for cls in USER_ERRORS}
    for name, cls in found.items():
        assert cls.__name__ == name and issubclass(cls, UserError)


@pytest.mark.parametrize("cls", USER_ERRORS, ids=lambda c: c.__name__)
def test_a_user_error_keeps_its_type_and_words_across_the_process_pipe(cls):
    exc = _as_exception({"kind": "error", "type": cls.__name__, "message": "learning rate must be positive"})
    assert type(exc) is cls and str(exc) == "learning rate must be positive"


def test_a_user_error_is_told_in_its_own_words(caplog):
    with caplog.at_level(logging.ERROR, logger="mnist_demo"):
        assert message(UserError("x")) == "x"
        assert message(ConfigError("epochs must be at least 1"), doing="training") == "epochs must be at least 1"
    assert not caplog.records  # a person's own mistake is not a server fault


def test_an_unexpected_error_is_an_apology_and_its_details_go_to_the_log(caplog):
    exc = RuntimeError("secret /srv/path")
    with caplog.at_level(logging.ERROR, logger="mnist_demo"):
        told = message(exc, doing="classifying")
    assert told == UNEXPECTED.format(what="classifying")
    assert "RuntimeError" not in told and "/srv/path" not in told and "secret" not in told
    [record] = [r for r in caplog.records if r.name == "mnist_demo"]
    assert record.levelno == logging.ERROR and "classifying" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exc


def test_an_unknown_error_type_from_the_training_process_is_not_shown_to_people(caplog):
    with caplog.at_level(logging.ERROR):
        exc = _as_exception({"kind": "error", "type": "KeyError", "message": "'/srv/secret'"})
    assert isinstance(exc, WorkerError) and "/srv/secret" not in str(exc)
    assert any("/srv/secret" in r.getMessage() for r in caplog.records)
