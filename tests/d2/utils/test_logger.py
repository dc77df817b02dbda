"""setup_logger files and names, rate-limited logging, create_small_table."""

import logging
import os
import uuid

import pytest

from sephnet.d2.utils.logger import (
    create_small_table,
    log_every_n,
    log_first_n,
    setup_logger,
)


def _flush(name):
    for handler in logging.getLogger(name).handlers:
        handler.flush()


def test_setup_logger_writes_log_txt_in_a_directory(tmp_path):
    name = f"test_logger_{uuid.uuid4().hex}"
    logger = setup_logger(str(tmp_path / "out"), name=name, color=False)
    logging.getLogger(name + ".child").info("hello from child")
    logger.warning("careful")
    _flush(name)
    text = (tmp_path / "out" / "log.txt").read_text()
    assert f"{name}.child INFO: hello from child" in text
    assert f"{name} WARNING: careful" in text
    assert logger.level == logging.DEBUG and logger.propagate is False


def test_setup_logger_rank_suffix_and_explicit_file(tmp_path):
    name = f"test_logger_{uuid.uuid4().hex}"
    setup_logger(str(tmp_path / "run.log"), distributed_rank=2, name=name)
    logging.getLogger(name).info("rank two")
    _flush(name)
    assert os.listdir(tmp_path) == ["run.log.rank2"]
    assert "rank two" in (tmp_path / "run.log.rank2").read_text()
    # rank > 0 logs only to its file, not to stdout
    (handler,) = logging.getLogger(name).handlers
    assert handler.stream.name.endswith("run.log.rank2")


@pytest.fixture
def restore_core_loggers():
    """setup_logger changes process-wide loggers; put them back so that later tests'
    log capture (which listens on the root logger) still sees the core's records."""
    saved = {}
    for name in ("detectron2", "sephnet.d2"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
    setup_logger.cache_clear()


def test_detectron2_logger_also_captures_the_core_modules(tmp_path, capsys, restore_core_loggers):
    setup_logger(str(tmp_path), name="detectron2")
    logging.getLogger("sephnet.d2.utils.events").info("core line")
    logging.getLogger("detectron2.x").info("d2 line")
    _flush("sephnet.d2")
    _flush("detectron2")
    text = (tmp_path / "log.txt").read_text()
    # As in detectron2, the terminal formatter shortens record.name before the file handler
    # sees the record, so log.txt shows the abbreviated names too.
    assert "d2.utils.events INFO: core line" in text
    assert "d2.x INFO: d2 line" in text
    out = capsys.readouterr().out
    assert "d2.utils.events]: core line" in out  # abbreviated like detectron2's "d2."
    assert "d2.x]: d2 line" in out


def test_log_first_n_and_every_n(caplog):
    name = f"test_logger_{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO, logger=name):
        for i in range(5):
            log_first_n(logging.INFO, f"first {i}", n=2, name=name)
        for i in range(7):
            log_every_n(logging.INFO, f"every {i}", n=3, name=name)
        for i in range(3):
            log_first_n(logging.INFO, "same text", n=1, name=name, key="message")
    assert [r.getMessage() for r in caplog.records] == [
        "first 0",
        "first 1",
        "every 0",
        "every 3",
        "every 6",
        "same text",
    ]


def test_create_small_table():
    table = create_small_table({"AP": 40.12345, "AP50": 60.0})
    lines = table.splitlines()
    assert len(lines) == 3
    assert lines[0].replace(" ", "") == "|AP|AP50|"
    assert "40.123" in lines[2] and "60.000" in lines[2]
