"""Progress where no bar can be drawn (nohup, CI logs): plain lines, throttled, and a last line per task."""

from ss3d_data import clikit


def test_plain_lines_when_not_a_terminal(monkeypatch, capsys):
    clock = iter([0.0, 10.0, 31.0, 31.0, 32.0, 33.0, 70.0]).__next__  # each call to the clock, in order
    monkeypatch.setattr(clikit.time, "perf_counter", clock)
    monkeypatch.setenv("SS3D_PROGRESS_EVERY_S", "30")
    with clikit.progress() as bar:  # pytest's stderr is not a terminal
        assert isinstance(bar, clikit.PlainProgress)
        task = bar.add_task("pretrain", total=None, status="")
        bar.update(task, advance=1, status="loss 0.5")   # t=10: within 30 s of the start, quiet
        bar.update(task, advance=1, status="loss 0.4")   # t=31: a line
        bar.update(task, advance=1, status="loss 0.3")   # t=32: quiet again
        bar.update(task, advance=1, status="loss 0.2")   # t=33
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["pretrain 2 0:00:31 loss 0.4", "pretrain 4 0:01:10 loss 0.2"]


def test_a_finished_task_with_a_total_says_so(monkeypatch, capsys):
    monkeypatch.setenv("SS3D_PROGRESS_EVERY_S", "3600")
    with clikit.progress() as bar:
        task = bar.add_task("iou", total=3, status="")
        for _ in range(3):
            bar.update(task, advance=1, status="ok")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("iou 3/3 0:00:00") and line.endswith("ok")
