"""Live progress: plain periodic lines when output is not a terminal, one rewritten line on a terminal."""

from __future__ import annotations

import io

import pytest

from pytest_dsbench.progress import Progress, bind, unbind


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_plain_line_is_printed_every_ten_percent() -> None:
    out = io.StringIO()
    with Progress(50, "decode c=4", stream=out) as progress:
        for _ in range(50):
            progress.advance()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines[:3]] == [
        "5/50 req (10%)",
        "10/50 req (20%)",
        "15/50 req (30%)",
    ]
    assert len(lines) == 10, "ten steps; the final line is not said twice"
    assert lines[-1].startswith("[dsbench] decode c=4: 50/50 req (100%)")


def test_a_heartbeat_line_appears_when_progress_is_slow() -> None:
    out = io.StringIO()
    progress = Progress(1000, "slow", stream=out, heartbeat_s=0.0)
    progress.advance()
    progress.advance()
    assert len(out.getvalue().splitlines()) == 2


def test_failures_and_eta_are_shown() -> None:
    out = io.StringIO()
    progress = Progress(10, "mixed", stream=out, step_pct=50)
    progress.advance(5, failed=2)
    assert ", 2 failed" in out.getvalue() and "eta" in out.getvalue()


def test_on_a_terminal_one_line_is_rewritten_in_place() -> None:
    out = FakeTty()
    with Progress(3, "live", stream=out, min_interval_s=0.0) as progress:
        progress.advance()
        progress.advance()
    text = out.getvalue()
    assert progress.mode == "live"
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_the_environment_can_turn_progress_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSBENCH_PROGRESS", "off")
    out = FakeTty()
    with Progress(3, "quiet", stream=out) as progress:
        progress.advance(3)
    assert out.getvalue() == ""


def test_inside_pytest_lines_reach_the_terminal_while_output_is_captured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_dsbench.progress import Progress

        def test_load():
            print("captured, not shown")
            with Progress(20, "load c=2") as progress:
                for _ in range(20):
                    progress.advance()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["[[]dsbench[]] load c=2: 2/20 req (10%)*", "*[[]dsbench[]] load c=2: 20/20 req (100%)*"]
    )
    result.stdout.no_fnmatch_line("*captured, not shown*")
    assert "\r" not in result.stdout.str()


def test_the_final_line_is_printed_only_when_it_says_something_new() -> None:
    out = io.StringIO()
    with Progress(10, "partial", stream=out, step_pct=50) as progress:
        progress.advance(3)  # below the first step: nothing yet
    assert [line.split(": ", 1)[1].split(",")[0] for line in out.getvalue().splitlines()] == ["3/10 req (30%)"]


class RecordingTerminal:
    """A terminal that keeps what progress wrote, and whether it could rewrite lines."""

    def __init__(self, rewrites: bool) -> None:
        self.rewrites = rewrites
        self.lines: list[str] = []
        self.rewritten: list[str] = []

    def available(self) -> bool:
        return True

    def can_rewrite(self) -> bool:
        return self.rewrites

    def write_line(self, text: str) -> None:
        self.lines.append(text)

    def rewrite(self, text: str, *, final: bool) -> None:
        self.rewritten.append(text)


@pytest.mark.parametrize("rewrites", [False, True], ids=["lines", "live"])
def test_progress_goes_to_the_bound_terminal_in_its_mode(rewrites: bool) -> None:
    terminal = RecordingTerminal(rewrites)
    bind(terminal)
    try:
        with Progress(2, "bound", min_interval_s=0.0) as progress:
            progress.advance(2)
    finally:
        unbind()
    written = terminal.rewritten if rewrites else terminal.lines
    assert written and written[-1].startswith("[dsbench] bound: 2/2 req")
    assert not (terminal.lines if rewrites else terminal.rewritten)
