"""`sd-blender-server`: load the model, then serve the HTTP API with uvicorn."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DEFAULT_PORT = 7870
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNETS = {
    "depth": "lllyasviel/control_v11f1p_sd15_depth",
    "normal": "lllyasviel/control_v11p_sd15_normalbae",
    "openpose": "lllyasviel/control_v11p_sd15_openpose",
    "lineart": "lllyasviel/control_v11p_sd15_lineart",
    "canny": "lllyasviel/control_v11p_sd15_canny",
    "seg": "lllyasviel/control_v11p_sd15_seg",
    "tile": "lllyasviel/control_v11f1e_sd15_tile",
}


def _controlnet_option(value: str) -> tuple[str, str]:
    control_type, _, source = value.partition("=")
    if not control_type.strip() or not source.strip():
        raise argparse.ArgumentTypeError(f"expected TYPE=ID_OR_PATH (e.g. depth=./controlnet-depth), got '{value}'")
    return control_type.strip(), source.strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sd-blender-server", description="sd_blender's GPU server: ControlNet Stable Diffusion over HTTP."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="hub id, local diffusers folder, .safetensors file, or 'tiny' (default: %(default)s)",
    )
    parser.add_argument(
        "--controlnet",
        action="append",
        type=_controlnet_option,
        default=[],
        metavar="TYPE=ID_OR_PATH",
        help="ControlNet serving a control type; repeatable; overrides that type's default",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), or a torch device (default: auto)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float16", "bfloat16", "float32"),
        help="auto: float16 on cuda, float32 otherwise",
    )
    parser.add_argument("--cache-dir", help="where the tiny model is built (default: $XDG_CACHE_HOME/sd_blender)")
    parser.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="FOLDER",
        help="A1111 or ComfyUI models folder (or the webui/ComfyUI root) whose checkpoints, ControlNets and LoRAs "
        "are offered by name; repeatable",
    )
    parser.add_argument(
        "--token", default=os.environ.get("SD_BLENDER_TOKEN"), help="bearer token required by every route but /health"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--print-openapi", action="store_true", help="print the OpenAPI schema (the API contract) and exit"
    )
    return parser.parse_args(argv)


def controlnets_for(model: str, overrides: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {control_type: "tiny" for control_type in DEFAULT_CONTROLNETS} if model == "tiny" else DEFAULT_CONTROLNETS
    return {**defaults, **dict(overrides)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # transformers warns at import about optional image backends the server never uses.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    import diffusers
    import uvicorn

    from .api import create_app
    from .engine import GenerationEngine, ModelLoadError
    from .jobs import JobQueue

    if args.log_level != "debug":
        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
    try:
        engine = GenerationEngine(
            args.model,
            controlnets_for(args.model, args.controlnet),
            args.device,
            args.dtype,
            args.cache_dir,
            models_dirs=args.models_dir,
        )
    except ModelLoadError as error:
        print(f"sd-blender-server: {error}", file=sys.stderr)
        return 2
    if args.print_openapi:
        print(json.dumps(create_app(JobQueue(engine), token=args.token).openapi(), indent=2, sort_keys=True))
        return 0
    try:
        engine.load()
    except ModelLoadError as error:
        print(f"sd-blender-server: {error}", file=sys.stderr)
        return 2
    jobs = JobQueue(engine)
    jobs.start()
    app = create_app(jobs, token=args.token)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                print(f"sd_blender server ready on http://{args.host}:{args.port}", flush=True)

    server = Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level))
    server.run()
    return 0 if server.started else 1
