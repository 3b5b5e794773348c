"""What `make demo` prints (tools/demo.py): a line per stage, the files written, a progress bar in
place on a terminal and a line per quarter elsewhere, and none of Blender's render log, which
goes to the stage's log file. Driven with a real child process printing as the command line does."""
import importlib.util
import io

import pytest

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("demo", REPO_ROOT / "tools" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

STAGE = """
import sys
print("Fra:1 Mem:12.00M (Peak 12.00M) | Time:00:00.01 | Rendering 1 / 1 samples", flush=True)
for step in range(0, 21):
    print(f"  step {step} of 20", flush=True)
print(sys.argv[1], flush=True)
"""


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_stage_shows_progress_and_the_files_written_and_logs_the_rest(tmp_path, capsys):
    written = tmp_path / "result.png"
    written.write_bytes(b"png")
    log = tmp_path / "stage.log"
    assert demo.run_stage("generating", log, "-c", STAGE, written) == [str(written)]
    shown = capsys.readouterr().out
    assert shown.splitlines()[0].startswith("generating (log: ")
    assert "Fra:" not in shown and "Fra:1 Mem:12.00M" in log.read_text()
    assert [line.split("] ")[1] for line in shown.splitlines()[1:]] == [
        "step 0 of 20", "step 5 of 20", "step 10 of 20", "step 15 of 20", "step 20 of 20"]


def test_on_a_terminal_the_bar_is_redrawn_in_place():
    terminal = Terminal()
    progress = demo.Progress(terminal)
    for step in (1, 2, 3):
        progress.show(step, 4)
    progress.end()
    assert terminal.getvalue().count("\n") == 1 and terminal.getvalue().count("\r") == 3
    assert terminal.getvalue().rstrip().endswith("[" + "#" * 22 + "-" * 8 + "] step 3 of 4")


def test_a_stage_that_fails_says_so_with_the_end_of_its_log(tmp_path):
    log = tmp_path / "stage.log"
    with pytest.raises(SystemExit) as stopped:
        demo.run_stage("rendering", log, "-c", "import sys; print('sd_blender: error: no camera'); sys.exit(1)")
    assert str(stopped.value).startswith(f"rendering failed (exit status 1); the end of {log}:")
    assert "sd_blender: error: no camera" in str(stopped.value)
