"""`make demo`: demo scene → passes → local server → generate → apply, all written to out/demo/.

Starts sd-blender-server on a free loopback port for the duration of the demo and stops it.
"""
import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a knight waving in a sunny courtyard, a wooden crate, a ball and a cypress tree, storybook illustration"
SERVER_START_TIMEOUT = 900  # the first start of the real models may still be reading them from disk


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(process, url, log_path):
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the server did not start within {SERVER_START_TIMEOUT} s; see {log_path}")


def run_step(*args):
    print("$ " + " ".join(str(arg) for arg in args), flush=True)
    subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, check=True)


def run_demo(out, url):
    blend = out / "scene.blend"
    run_step("tools/demo_scene.py", blend)
    run_step("-m", "sd_blender", "passes", blend, "--out", out / "passes")
    run_step("-m", "sd_blender", "generate", blend, "--server", url, "--prompt", PROMPT, "--seed", "1234",
             "--steps", "20", "--controls", "depth:0.8,openpose:1.0", "--out", out, "--apply", "texture,background", "--objects", "Ground,Crate,Ball,Tree",
             "--save-blend", out / "applied.blend")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--model", help="server model (default: the server's default, SD 1.5); 'tiny' works offline")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "sd_blender_server", "--port", url.rsplit(":", 1)[1]]
    if args.model:
        command += ["--model", args.model]
    log_path = out / "server.log"
    with open(log_path, "w") as log:
        print(f"starting the server: {' '.join(command)} (log: {log_path})", flush=True)
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        if not wait_for_server(server, url, log_path):
            print(log_path.read_text()[-2000:], file=sys.stderr)
            if args.model != "tiny":
                print("\nThe default models could not be loaded (offline, and not in the Hugging Face cache?).\n"
                      "Run the same demo on the built-in tiny model:  make demo MODEL=tiny", file=sys.stderr)
            return 2
        run_demo(out, url)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\ndemo written to {out}: scene.blend, passes/, the generated PNG, applied.blend")
    return 0


if __name__ == "__main__":
    sys.exit(main())
