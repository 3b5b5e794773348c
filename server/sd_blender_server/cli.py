"""`sd-blender-server`: load the model, then serve the HTTP API with uvicorn (or, with --ray, on
Ray Serve: ray_app.py)."""
from __future__ import annotations

import json
import logging
import os
import sys

from .arguments import is_loopback, parse_args, quiet_libraries, server_config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.print_openapi and not args.token and not is_loopback(args.host):
        print(
            f"sd-blender-server: refusing to listen on {args.host} without a token: anyone who can reach it could "
            "use the GPU; set --token or $SD_BLENDER_TOKEN, or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is imported, below
    if args.log_level != "debug":
        # transformers warns at import about optional image backends the server never uses.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    config = server_config(args)
    quiet_libraries(debug=args.log_level == "debug")
    if (args.ray or args.ray_address) and not args.print_openapi:
        return _serve_on_ray(args, config)

    import uvicorn

    from .api import create_app
    from .engine import GenerationEngine
    from .errors import ModelLoadError
    from .jobs import JobQueue

    try:
        engine = GenerationEngine(config)
        if not args.print_openapi:
            engine.load()
    except ModelLoadError as error:
        print(f"sd-blender-server: {error}", file=sys.stderr)
        return 2
    jobs = JobQueue(engine, config)
    app = create_app(config, jobs)
    if args.print_openapi:
        print(json.dumps(app.openapi(), indent=2, sort_keys=True))
        return 0
    jobs.start()

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                print(f"sd_blender server ready on http://{config.host}:{config.port}", flush=True)

    server = Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=args.log_level))
    server.run()
    return 0 if server.started else 1


def _serve_on_ray(args, config) -> int:
    try:
        from .ray_app import serve_cluster
    except ImportError as error:
        print(
            f"sd-blender-server: --ray needs Ray Serve ({error}); install it with: pip install 'sd-blender-server[ray]'",
            file=sys.stderr,
        )
        return 2
    return serve_cluster(args, config)
