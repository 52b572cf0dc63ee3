"""``sana-stream serve``: the streaming server. Every option can also come from a SANA_STREAM_<OPTION> variable."""

from __future__ import annotations

import argparse

from cluster.options import add_cluster_options, wants_cluster
from engines import AUTO, backend_names
from engines.specs import Precision
from rtc.ice_config import DEFAULT_TURN_TTL_S
from rtc.secret_rules import MIN_TOKEN_CHARS, MIN_TURN_SECRET_CHARS, SECRET_RECIPE
from sana_stream.env import env
from stream.config import CfgType, AutoencoderKind


def run(args: argparse.Namespace) -> int:
    if wants_cluster(args):
        from cluster.serve import run_cluster  # Ray only for --workers

        return run_cluster(args)
    from server.serve import run_server  # aiortc, uvicorn and the model stack only for this command

    return run_server(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=env("model"),
                   help="diffusers-format Sana-Sprint directory or hub id (default: cached Sana-Sprint 0.6B; on a "
                        "CUDA GPU with network access it is downloaded, else a tiny demo model is served)")
    p.add_argument("--host", default=env("host", "127.0.0.1"),
                   help="address to bind; anything but loopback needs --token (or --allow-public-without-token)")
    p.add_argument("--port", type=int, default=int(env("port", "8080") or 8080), help="HTTP port")
    p.add_argument("--backend", default=env("backend", AUTO), choices=[AUTO, *backend_names()],
                   help="auto (default): tensorrt on an NVIDIA GPU, onnxruntime on a CPU, torch where those are "
                        "not installed; compiled backends are built on first use (cached; see `sana-stream build`)")
    p.add_argument("--precision", default=env("precision"), choices=[x.value for x in Precision],
                   help="compiled graph precision (default: fp32 for onnxruntime, bf16 for tensorrt)")
    p.add_argument("--width", type=int, default=int(env("width", "512") or 512),
                   help="output width, a multiple of 32 (camera frames are resized and centre-cropped to it)")
    p.add_argument("--height", type=int, default=int(env("height", "512") or 512), help="output height, a multiple of 32")
    p.add_argument("--steps", type=int, default=int(env("steps", "1") or 1), help="denoising steps (1-4)")
    p.add_argument("--strength", type=float, default=float(env("strength", "1.0") or 1.0),
                   help="first TrigFlow angle in radians (pi/2 = pure noise)")
    p.add_argument("--t-list", type=parse_t_list, default=env("t_list"),
                   help="explicit comma-separated angles; overrides --steps/--strength")
    p.add_argument("--prompt", default=env("prompt"),
                   help="the prompt every new stream starts with (POST /prompt changes it live); default: 'a "
                        "watercolor painting', for the demo model its first trained prompt")
    p.add_argument("--cfg-type", default=env("cfg_type", CfgType.NONE.value), choices=[c.value for c in CfgType],
                   help="residual CFG with the negative prompt (docs/engine.md): none, full, self or onetime")
    p.add_argument("--encoder", default=env("encoder"),
                   choices=[AutoencoderKind.DCAE.value, AutoencoderKind.TINY.value],
                   help="the image encoder: DC-AE, or the tiny autoencoder (docs/autoencoder.md); default: dcae, "
                        "for the demo model the one it was trained with (tiny)")
    p.add_argument("--decoder", default=env("decoder"), choices=[v.value for v in AutoencoderKind],
                   help="the image decoder: DC-AE, the tiny autoencoder or DC-AE-Lite (docs/autoencoder.md); "
                        "default: dcae, for the demo model the one it was trained with (tiny)")
    p.add_argument("--tiny-vae", default=env("tiny_vae"), help="directory of taesana_*.pth")
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH[:PREPROCESSOR[:SCALE]]",
                   help="a Sprint ControlNet (directory or hub id) with its preprocessor (canny, passthrough) and "
                        "scale; repeatable")
    p.add_argument("--similarity-filter", action="store_true", default=env("similarity_filter") == "1",
                   help="skip frames nearly the same as the last processed one (a still camera costs no GPU)")
    p.add_argument("--seed", type=int, default=int(env("seed", "0") or 0), help="noise seed of new streams")
    p.add_argument("--token", default=env("token"), action=SecretOption,
                   help="require 'Authorization: Bearer TOKEN' for everything but /config, a bare /health and the "
                        f"pages; at least {MIN_TOKEN_CHARS} characters (e.g. `{SECRET_RECIPE}`; prefer "
                        "SANA_STREAM_TOKEN: the command line is readable by every local user)")
    p.add_argument("--view-token", default=env("view_token"), action=SecretOption,
                   help="the token /view links carry: plays streams, nothing else (default: derived from --token; "
                        f"at least {MIN_TOKEN_CHARS} characters; prefer SANA_STREAM_VIEW_TOKEN)")
    p.add_argument("--max-peers", type=int, default=int(env("max_peers", "4") or 4),
                   help="camera and WHIP connections at once; more get 503 server_full")
    p.add_argument("--max-viewers", type=int, default=int(env("max_viewers", "-1") or -1),
                   help="receive-only /view connections (OBS Browser Sources); default 4 x --max-peers")
    p.add_argument("--idle-timeout", type=float, default=float(env("idle_timeout", "10") or 10),
                   help="seconds without camera frames before a peer is closed")
    p.add_argument("--cors-origin", action="append", default=[o for o in (env("cors_origin") or "").split(",") if o],
                   metavar="ORIGIN", help="a web origin allowed to call the API from its pages; repeatable")
    p.add_argument("--ssl-certfile", default=env("ssl_certfile"), metavar="FILE",
                   help="serve https with this certificate (browsers give the camera only to https or localhost)")
    p.add_argument("--ssl-keyfile", default=env("ssl_keyfile"), metavar="FILE", help="the certificate's key")
    p.add_argument("--allow-public-without-token", action="store_true",
                   default=env("allow_public_without_token") == "1",
                   help="bind a non-loopback --host without --token: anyone who reaches it can use it")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   default=[h for h in (env("allowed_host") or "").split(",") if h],
                   help="a Host name to answer besides loopback and the bound address (a reverse proxy's, a LAN "
                        "name; *.example.com for subdomains; * turns the check off); repeatable")
    p.add_argument("--request-timeout", type=float, default=float(env("request_timeout", "10") or 10),
                   help="seconds a request's head, and then its body, may take to arrive")
    p.add_argument("--max-connections", type=int, default=int(env("max_connections", "200") or 200),
                   help="open HTTP connections; more are closed at once")
    p.add_argument("--no-pages", action="store_true", default=env("no_pages") == "1",
                   help="serve the API only, without the web pages (/ and /view); without this flag a server "
                        "whose pages are missing refuses to start")
    p.add_argument("--ndi", action="store_true", default=env("ndi") == "1",
                   help="also publish each stream's restyled output as an NDI source named after the stream (OBS's "
                        "NDI plugin, vMix, ... on the LAN); needs the ndi extra: pip install '.[ndi]'")
    add_ice_options(p)
    add_cluster_options(p, env)
    p.set_defaults(func=run)


def add_ice_options(p: argparse.ArgumentParser) -> None:
    """STUN/TURN for servers and clients behind NAT (docs/deploy.md). Secrets are better passed in the environment
    than on the command line, where other users of the machine can read them (ps)."""
    p.add_argument("--ice-server", action="append", metavar="URL",
                   default=[u for u in (env("ice_server") or "").split(",") if u.strip()],
                   help="stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]; repeatable "
                        "(SANA_STREAM_ICE_SERVER: comma-separated). The server's own connections, the web pages and "
                        "`sana-stream camera` all use them")
    p.add_argument("--turn-secret", default=env("turn_secret"), action=SecretOption,
                   help="the TURN server's shared secret (coturn: use-auth-secret + static-auth-secret), at least "
                        f"{MIN_TURN_SECRET_CHARS} characters: each client gets its own time-limited credentials "
                        "(recommended; prefer SANA_STREAM_TURN_SECRET)")
    p.add_argument("--turn-ttl", type=float, default=float(env("turn_ttl") or DEFAULT_TURN_TTL_S),
                   help="seconds a minted TURN credential stays valid (default: %(default)g); clients fetch new "
                        "ones for every connection")
    p.add_argument("--turn-username", default=env("turn_username"), help="static TURN username (instead of a secret)")
    p.add_argument("--turn-credential", default=env("turn_credential"), action=SecretOption,
                   help="static TURN password (prefer SANA_STREAM_TURN_CREDENTIAL)")


class SecretOption(argparse.Action):
    """Stores the value, and notes that a secret came on the command line (``serve`` warns: ``ps`` shows it to
    every local user; the SANA_STREAM_* variables are the documented way)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.secrets_on_command_line = [*getattr(namespace, "secrets_on_command_line", []), option_string]


def parse_t_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--t-list must be comma-separated angles in radians, got {text!r}") from None
