"""TerminalProgress: the line's format, drawing only on terminals, and log records printed
above the line."""
import io
import logging

import torch
from torch import nn

from sephnet.backend import SimpleTrainer, hooks
from sephnet.engine.progress import TerminalProgress, format_progress

CLEAR = "\r\033[K"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        return {"loss": self.fc(x).pow(2).mean()}


def _trainer():
    def data():
        while True:
            yield torch.ones(4, 2)

    model = _Model()
    return SimpleTrainer(model, data(), torch.optim.SGD(model.parameters(), lr=0.01))


def test_format_progress_by_hand():
    line = format_progress(
        339, 1000, eta_seconds=192.7, seconds_per_iter=0.2912,
        scalars=(("total_loss", 0.81234), ("lr", 0.02)),
    )
    # 340 of 1000 done: 34% of a 20-character bar is 6.8 -> 7 '#'
    assert line == (
        "iter 340/1000 [#######.............]  34%  eta 0:03:12  0.29 s/it  "
        "total_loss 0.8123  lr 0.02"
    )
    assert format_progress(9, 10) == "iter 10/10 [####################] 100%"
    assert format_progress(339, 1000, 192.7, width=20) == line[:20]


def test_draws_every_step_on_a_terminal_and_ends_with_a_newline():
    terminal = _Terminal()
    progress = TerminalProgress(stream=terminal, refresh_seconds=0.0)
    trainer = _trainer()
    trainer.register_hooks([hooks.IterationTimer(warmup_iter=0), progress])
    trainer.train(0, 4)
    out = terminal.getvalue()
    lines = out.split(CLEAR)[1:]
    assert [l.split(" [")[0] for l in lines] == [f"iter {i}/4" for i in range(1, 5)]
    assert "eta " in lines[-1] and "s/it" in lines[-1] and "total_loss " in lines[-1]
    assert "100%  eta 0:00:00  " in lines[-1]
    assert out.endswith("\n") and out.count("\n") == 1
    assert not progress.enabled  # released after training


def test_refresh_period_limits_redraws_but_shows_the_last_step():
    terminal = _Terminal()
    trainer = _trainer()
    trainer.register_hooks([TerminalProgress(stream=terminal, refresh_seconds=3600.0)])
    trainer.train(0, 5)
    drawn = [l.split(" [")[0] for l in terminal.getvalue().split(CLEAR)[1:]]
    assert drawn == ["iter 1/5", "iter 5/5"]


def test_nothing_is_written_when_not_a_terminal():
    stream = io.StringIO()
    progress = TerminalProgress(stream=stream, refresh_seconds=0.0)
    trainer = _trainer()
    trainer.register_hooks([progress])
    trainer.train(0, 3)
    assert stream.getvalue() == "" and not progress.enabled


def test_log_records_are_printed_above_the_line():
    terminal = _Terminal()
    logger = logging.getLogger("sephnet.test_progress")
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        trainer = _trainer()
        trainer.register_hooks([
            TerminalProgress(stream=terminal, refresh_seconds=0.0),
            hooks.CallbackHook(after_step=lambda t: logger.info("logged at %d", t.iter)),
        ])
        trainer.train(0, 2)
        out = terminal.getvalue()
        # each record starts on a wiped line, right after that step's progress line
        for i in (0, 1):
            assert f"{CLEAR}iter {i + 1}/2 [" in out
            assert f"{CLEAR}logged at {i}\n" in out
        assert out.index("logged at 0") < out.index("iter 2/2")
        assert handler.filters == []  # the hook's filter is removed after training
    finally:
        logger.removeHandler(handler)
