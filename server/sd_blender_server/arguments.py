"""The command line's flags (sd-blender-server and Ray's app_builder read the same), the server
configuration they ask for, and the libraries' logging as --log-level asks."""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os

from .config import AUTO_MAX_BATCH_CUDA, COMPILE_MODES, AccelerationOptions, RequestLimits, ServerConfig, controlnets_for

_DEFAULTS = ServerConfig()


def _controlnet_option(value: str) -> tuple[str, str]:
    control_type, _, source = value.partition("=")
    if not control_type.strip() or not source.strip():
        raise argparse.ArgumentTypeError(f"expected TYPE=ID_OR_PATH (e.g. depth=./controlnet-depth), got '{value}'")
    return control_type.strip(), source.strip()


def _positive(kind):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{value}'") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
        return number

    return parse


def _max_batch(value: str) -> int | None:
    """--max-batch: `auto` (None) or a count of images."""
    if value == "auto":
        return None
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of images or 'auto', got '{value}'")
    return _positive(int)(value)


def _not_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{value}'") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def is_loopback(host: str) -> bool:
    """Only this machine can connect: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _acceleration_arguments(group) -> None:
    group.add_argument(
        "--no-fast-defaults", dest="fast_defaults", action="store_false",
        help="run the models as stock diffusers does: no channels_last, no fused QKV projections (the CUDA "
        "defaults; attention is torch's scaled_dot_product_attention either way)",
    )
    group.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None,
        help="channels_last memory format for the UNet, ControlNets and VAE (default: on cuda, off elsewhere: "
        "no gain measured on the CPU)",
    )
    group.add_argument(
        "--fused-qkv", action=argparse.BooleanOptionalAction, default=None,
        help="fused QKV projections in the UNet and ControlNets; jobs with LoRAs run unfused (default: on cuda "
        "but with --low-vram, off elsewhere)",
    )
    group.add_argument(
        "--compile", action="store_true",
        help="torch.compile the UNet, ControlNets and VAE decoder: compiled at startup for the model's own size "
        "(a warm-up job), then once per new size or batch on its first job (slow: minutes on a CPU); jobs with "
        "LoRAs run uncompiled; not applied with --low-vram on cuda",
    )
    group.add_argument(
        "--compile-mode", choices=COMPILE_MODES,
        help="torch.compile mode (default: max-autotune-no-cudagraphs on cuda, default elsewhere; reduce-overhead "
        "uses CUDA graphs)",
    )
    group.add_argument(
        "--low-vram", action="store_true",
        help="for small GPUs: model CPU offload (cuda only: each model is on the GPU only while it runs) and VAE "
        "tiling and slicing (every device)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sd-blender-server", description="sd_blender's GPU server: ControlNet Stable Diffusion over HTTP."
    )
    parser.add_argument("--host", default=_DEFAULTS.host, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=_DEFAULTS.port, help="port (default: %(default)s)")
    parser.add_argument(
        "--model",
        default=_DEFAULTS.model,
        help="hub id, local diffusers folder, .safetensors file, or 'tiny' (default: %(default)s)",
    )
    parser.add_argument(
        "--controlnet",
        action="append",
        type=_controlnet_option,
        default=[],
        metavar="TYPE=ID_OR_PATH",
        help="ControlNet serving a control type; repeatable; overrides that type's default. "
        "TYPE 'union' names an SDXL ControlNet Union model: it serves every type no other --controlnet names, "
        "and the SD 1.5 defaults are dropped",
    )
    parser.add_argument(
        "--device", default=_DEFAULTS.device, help="auto (cuda, mps, cpu), or a torch device (default: %(default)s)"
    )
    parser.add_argument(
        "--dtype",
        default=_DEFAULTS.dtype,
        choices=("auto", "float16", "bfloat16", "float32"),
        help="auto: float16 on cuda and mps, float32 on cpu (default: %(default)s)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network: hub models must already be in the Hugging Face cache (sets HF_HUB_OFFLINE=1)",
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
        "--token",
        default=os.environ.get("SD_BLENDER_TOKEN") or None,
        help="bearer token required by every route but /health (default: $SD_BLENDER_TOKEN); "
        "required to listen on any address but loopback",
    )
    _acceleration_arguments(parser.add_argument_group("acceleration (docs/performance.md)"))
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-queue", type=_positive(int), default=_DEFAULTS.max_queue,
        help="jobs that may wait; past it POST /v1/jobs answers 429 (default: %(default)s)",
    )
    limits.add_argument(
        "--job-timeout", type=_not_negative, default=_DEFAULTS.job_timeout,
        help="seconds a job may run before it is stopped and failed; 0: no limit (default: %(default)g)",
    )
    limits.add_argument(
        "--keep-results", type=_positive(int), default=_DEFAULTS.keep_results,
        help="finished jobs (with their images) kept; older ones are dropped (default: %(default)s)",
    )
    limits.add_argument(
        "--result-ttl", type=_positive(float), default=_DEFAULTS.result_ttl,
        help="seconds a finished job (with its images) is kept (default: %(default)g)",
    )
    limits.add_argument(
        "--max-body-mb", type=_positive(float), default=_DEFAULTS.max_body_mb,
        help="largest request body in MB; larger answers 413 (default: %(default)g)",
    )
    limits.add_argument(
        "--max-batch", type=_max_batch, default=_DEFAULTS.max_batch, metavar="N|auto",
        help="most images one pipeline call runs for queued jobs that can share it (same model, size, steps...); "
        f"1: never batch; auto: {AUTO_MAX_BATCH_CUDA} on CUDA, 1 elsewhere (default: auto)",
    )
    limits.add_argument(
        "--max-pixels", type=_positive(int), default=_DEFAULTS.request.max_pixels,
        help="most pixels (width x height) a job may ask for; input images may have 4x as many (default: %(default)s)",
    )
    limits.add_argument(
        "--max-views", type=_positive(int), default=_DEFAULTS.request.max_views,
        help="most views a synchronized texture job (POST /v1/texture-jobs) may have (default: %(default)s)",
    )
    limits.add_argument(
        "--max-frames", type=_positive(int), default=_DEFAULTS.request.max_frames,
        help="most frames a frame job (POST /v1/frame-jobs) may have, its anchor not counted (default: %(default)s)",
    )
    parser.add_argument(
        "--png-compression", type=int, choices=range(10), default=_DEFAULTS.png_compression, metavar="0-9",
        help="zlib level of the PNG images sent: 0 stores them, the fastest (about 3 ms for 512x512); 6 makes "
        "photographic images about a third smaller for about 20 ms more on a small CPU, for a slow network "
        "(default: %(default)s)",
    )
    ray = parser.add_argument_group("Ray Serve: several GPUs and machines (docs/scaling.md; pip install 'sd-blender-server[ray]')")
    ray.add_argument(
        "--ray", action="store_true",
        help="serve on Ray Serve: a local Ray instance on this machine, unless --ray-address names a cluster",
    )
    ray.add_argument(
        "--ray-address", metavar="ADDRESS",
        help="join this Ray cluster (e.g. ray://head:10001, or 'auto' for the one this machine is part of); implies --ray",
    )
    ray.add_argument(
        "--replicas", type=_positive(int), metavar="N",
        help="generator replicas, each its own engine and job queue (default: one per GPU of the cluster, 1 without GPUs)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--print-openapi", action="store_true", help="print the OpenAPI schema (the API contract) and exit"
    )
    return parser.parse_args(argv)


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The configuration the command line asks for."""
    return ServerConfig(
        model=args.model,
        controlnets=controlnets_for(args.model, args.controlnet),
        device=args.device,
        dtype=args.dtype,
        acceleration=AccelerationOptions(
            fast_defaults=args.fast_defaults, channels_last=args.channels_last, fused_qkv=args.fused_qkv,
            compile=args.compile, compile_mode=args.compile_mode, low_vram=args.low_vram,
        ),
        cache_dir=args.cache_dir,
        models_dirs=tuple(args.models_dir),
        host=args.host,
        port=args.port,
        token=args.token,
        max_queue=args.max_queue,
        job_timeout=args.job_timeout or None,
        keep_results=args.keep_results,
        result_ttl=args.result_ttl,
        max_body_mb=args.max_body_mb,
        max_batch=args.max_batch,
        png_compression=args.png_compression,
        request=dataclasses.replace(
            RequestLimits(), max_pixels=args.max_pixels, max_views=args.max_views, max_frames=args.max_frames
        ),
    )


def quiet_libraries(debug: bool) -> None:
    """One log format, and no loading or step bars outside --log-level debug; the hub's download
    bars (huggingface_hub's own) stay on the console."""
    import diffusers
    import huggingface_hub.utils
    import transformers

    huggingface_hub.utils.logging.get_logger().handlers.clear()  # it would print each warning a second time
    if debug:
        return
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()  # transformers turned the hub's off too
    for client in ("httpx", "httpx2"):  # a line per HTTP request to the hub
        logging.getLogger(client).setLevel(logging.WARNING)
