"""`make demo`: demo scene → passes → local server → generate → apply, all written to out/demo/.

Starts sd-blender-server on a free loopback port for the duration of the demo and stops it.
Prints one line per stage, a progress bar while the image is generated (updated in place on a
terminal, a line per quarter otherwise) and the files written; the full output of every stage
(Blender's render log included) goes to a log file next to them.
"""
import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from live_server import running_server  # noqa: E402  (the launcher the tests use)

PROMPT = "a knight waving in a sunny courtyard, a wooden crate, a ball and a cypress tree, storybook illustration"
SERVER_START_TIMEOUT = 900  # the first start of the real models may still be reading them from disk
STEP = re.compile(r"step (\d+) of (\d+)")
BAR_WIDTH = 30


class Progress:
    """A progress bar on one line of a terminal; elsewhere a plain line at each quarter."""

    def __init__(self, stream=None):
        self._stream = stream or sys.stdout
        self._in_place = self._stream.isatty()
        self._quarters_shown = set()

    def show(self, step, total):
        fraction = step / total if total else 0.0
        filled = round(fraction * BAR_WIDTH)
        text = f"  [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] step {step} of {total}"
        if self._in_place:
            self._stream.write("\r" + text)
        elif int(fraction * 4) not in self._quarters_shown:
            self._quarters_shown.add(int(fraction * 4))
            self._stream.write(text + "\n")
        self._stream.flush()

    def end(self):
        if self._in_place:
            self._stream.write("\n")


def run_stage(name, log_path, *arguments):
    """Run `python ARGUMENTS` with its output in log_path; show its steps as a progress bar and
    return the files it wrote (the lines of its output that are paths of existing files)."""
    print(f"{name} (log: {os.path.relpath(log_path)})", flush=True)
    progress, written = Progress(), []
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, *map(str, arguments)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
        for line in process.stdout:
            log.write(line)
            step = STEP.search(line)
            if step:
                progress.show(int(step[1]), int(step[2]))
            elif os.path.isfile(line.strip()):
                written.append(line.strip())
    progress.end()
    if process.wait() != 0:
        raise SystemExit(f"{name} failed (exit status {process.returncode}); the end of {log_path}:\n"
                         + "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:]))
    return written


def show_written(paths):
    for path in paths:
        print(f"  {os.path.relpath(path)}")


def run_demo(out, url):
    blend = out / "scene.blend"
    run_stage("building the demo scene", out / "scene.log", "tools/demo_scene.py", blend)
    show_written([blend])
    passes = run_stage("rendering the passes", out / "passes.log", "-m", "sd_blender", "passes", blend,
                       "--out", out / "passes")
    show_written(passes)
    results = run_stage(
        "generating with depth and OpenPose, then applying as texture and background", out / "generate.log",
        "-m", "sd_blender", "generate", blend, "--server", url, "--prompt", PROMPT, "--seed", "1234", "--steps", "20",
        "--controls", "depth:0.8,openpose:1.0", "--out", out, "--apply", "texture,background",
        "--objects", "Ground,Crate,Ball,Tree", "--save-blend", out / "applied.blend",
    )
    show_written(results)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--model", help="server model (default: the server's default, SD 1.5); 'tiny' works offline")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "server.log"
    print(f"starting sd-blender-server with {args.model or 'its default models'} (log: {os.path.relpath(log_path)})",
          flush=True)
    try:
        with running_server(model=args.model, log_path=log_path, start_timeout=SERVER_START_TIMEOUT) as server:
            print(f"  ready at {server.url}")
            run_demo(out, server.url)
    except RuntimeError:  # the server exited or never became healthy: its log says why
        print("".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-20:]), file=sys.stderr)
        if args.model != "tiny":
            print("\nThe default models could not be loaded (offline, and not in the Hugging Face cache?).\n"
                  "Run the same demo on the built-in tiny model:  make demo MODEL=tiny", file=sys.stderr)
        return 2
    print(f"demo written to {out}: scene.blend, passes/, the generated PNG, applied.blend")
    return 0


if __name__ == "__main__":
    sys.exit(main())
