"""Progress bars: tqdm on a terminal; off a terminal (a log file, a pipe) a few plain lines, no carriage returns."""

import io
import os
import subprocess
import sys

from crossreid import progress
from crossreid.progress import PlainProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_tqdm_bar_and_a_file_plain_lines(monkeypatch):
    tty = Terminal()
    for _ in progress_bar(range(50), desc="work", file=tty):
        pass
    assert "\r" in tty.getvalue() and "50/50" in tty.getvalue()

    log = io.StringIO()
    for _ in progress_bar(range(50), desc="work", unit="img", file=log):
        pass
    assert log.getvalue() == "work: 50/50 img, 0 s\n"  # one line when it ends
    log = io.StringIO()
    for _ in progress_bar(range(50), desc="epoch", keep=False, file=log):
        pass
    assert log.getvalue() == ""  # a transient bar leaves nothing
    assert progress_bar(range(3), enabled=False, file=log).disable and log.getvalue() == ""

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a long run: a line every interval
    log = io.StringIO()
    with progress_bar(total=4, desc="render", unit="img", keep=False, file=log) as bar:
        assert isinstance(bar, PlainProgress)
        bar.update(1)
        bar.set_postfix(loss="2.500")
        bar.update(3)
    assert log.getvalue().splitlines() == ["render: 1/4 img (25%), 0 s", "render: 4/4 img, 0 s, loss=2.500"]


def test_training_output_to_a_file_is_a_few_plain_lines(tmp_path):
    """A run with progress on, its output sent to a file: generation, decoding and three epochs of
    steps give one line for the generated data, one for the initialisation and one per epoch, and no carriage return."""
    log = tmp_path / "train.log"
    args = ["train", "demo", "--out", str(tmp_path / "run"), "data.synth.identities=12", "data.synth.val_identities=2",
            "data.synth.images_per_camera=2", "train.epochs=3", "train.iterations_per_epoch=4",
            "train.ids_per_batch=2", "train.images_per_id=2", "data.height=32", "data.width=16"]
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "crossreid", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "CROSSREID_CACHE": str(tmp_path / "cache")})
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert [ln.split(":")[0] for ln in lines if not ln.startswith("[main")] == ["rendering synthetic persons",
                                                                               "init", "finished"], text
    assert len(lines) == 3 + 3, text
