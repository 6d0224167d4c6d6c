"""Device subcommands: ``serve``, ``install`` (into a model store), ``store`` and ``agent``.

They need only the device install; uvicorn, onnxruntime and the store are imported inside
the commands so that ``edgepack --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

EXIT_BUNDLE = 3
"""The bundle (its hashes, signature or self-test) or the install was refused."""
EXIT_STORE = 4
"""The model store cannot be read or written."""

_KEY_HELP = "Ed25519 public key (PEM); bundles must carry a valid signature for it."
_UNSIGNED_HELP = "Accept bundles whose authenticity is NOT checked (no --public-key). Never on a real device."


def _failure(exc: Exception, code: int) -> click.ClickException:
    error = click.ClickException(str(exc))
    error.exit_code = code
    return error


def _key_options(public_key: Path | None, allow_unsigned: bool) -> dict[str, Any]:
    if public_key is None and not allow_unsigned:
        raise click.UsageError(
            "give --public-key PEM (the key the bundles are signed with), or --allow-unsigned to accept bundles "
            "whose authenticity is not checked"
        )
    if public_key is None:
        click.echo("warning: --allow-unsigned: bundle authenticity is NOT checked", err=True)
    return {"public_key": public_key, "require_signature": public_key is not None}


@click.command(short_help="Serve a bundle or the model store to local apps over HTTP")
@click.argument("bundle", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), help="Serve the model store's current bundle and follow it (instead of BUNDLE).")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path), help="Listen on this unix socket (created 0600).")
@click.option("--socket-group", help="Group (name or gid) given access to the socket (mode 0660).")
@click.option("--host", help="Listen on TCP at this loopback address instead of a socket, e.g. 127.0.0.1.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port with --host (0: any free port).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host; serve has no authentication.")
@click.option("--buffer", "buffer_path", type=click.Path(dir_okay=False, path_type=Path), help="Record every prediction into this telemetry buffer (SQLite).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=_KEY_HELP)
@click.option("--allow-unsigned", is_flag=True, help=_UNSIGNED_HELP)
@click.option("--allow-schema-change", is_flag=True, help="With --store: follow to a bundle of another model or other inputs.")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=4 << 20, show_default=True, help="Largest request body (413 above).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--strict", is_flag=True, help="Refuse unknown features and categories never seen in training.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
def serve(
    bundle: Path | None,
    store: Path | None,
    socket_path: Path | None,
    socket_group: str | None,
    host: str | None,
    port: int,
    allow_remote: bool,
    buffer_path: Path | None,
    public_key: Path | None,
    allow_unsigned: bool,
    allow_schema_change: bool,
    max_body_bytes: int,
    threads: int,
    strict: bool,
    log_level: str,
) -> None:
    """Serve BUNDLE (or the model store's current bundle) to local apps in any language.

    Open Inference Protocol V2 (REST): GET /v2/health/live, /v2/health/ready,
    /v2/models/NAME[/versions/V] (metadata), POST /v2/models/NAME[/versions/V]/infer; and
    POST /v1/predict with {feature: value} or a list of them (answers what
    EdgeModel.predict returns). With --store it switches to a newly installed bundle
    without a restart. Runs until SIGTERM/SIGINT. Exit status: 2 usage, 3 bundle refused.
    """
    from edgepack import __version__
    from edgepack.serve import ServeError, ServeOptions, serve as run
    from runtime.errors import EdgeError

    if (bundle is None) == (store is None):
        raise click.UsageError("give a BUNDLE or --store DIR (exactly one)")
    if (socket_path is None) == (host is None):
        raise click.UsageError("give --socket PATH or --host 127.0.0.1 --port N (exactly one)")
    if socket_group is not None and socket_path is None:
        raise click.UsageError("--socket-group goes with --socket")
    try:
        options = ServeOptions(
            socket=socket_path, socket_group=socket_group, host=host, port=port, allow_remote=allow_remote, max_body_bytes=max_body_bytes
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    load_options = _key_options(public_key, allow_unsigned) | {"threads": threads, "strict": strict}
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    buffer = None
    if buffer_path is not None:
        import telemetry

        try:
            buffer = telemetry.Buffer(buffer_path)
        except telemetry.TelemetryError as exc:
            raise _failure(exc, 1) from exc
        load_options["telemetry"] = buffer
    follower = None
    try:
        try:
            if store is not None:
                from runtime.follower import StoreFollower

                follower = StoreFollower(store, allow_schema_change=allow_schema_change, health=True, **load_options).start()
                source: Any = follower
                if follower.model is None and follower.last_error:
                    click.echo(f"warning: {follower.last_error}", err=True)
            else:
                from runtime import ModelSlot

                source = ModelSlot(bundle, **load_options)  # type: ignore[arg-type]
        except EdgeError as exc:
            raise _failure(exc, EXIT_BUNDLE) from exc
        try:
            run(source, options, version=__version__, log_level=log_level, feedback=buffer)
        except ServeError as exc:
            raise _failure(exc, 2) from exc
    finally:
        if follower is not None:
            follower.stop()
        if buffer is not None:
            buffer.close()


@click.command(short_help="Install a bundle into a device's model store")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="The model store (created if missing).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=_KEY_HELP)
@click.option("--allow-unsigned", is_flag=True, help=_UNSIGNED_HELP)
@click.option("--allow-downgrade", is_flag=True, help="Install even if the store has held a newer version of this model.")
@click.option("--unless-newer", is_flag=True, help="Leave the store as is when it already holds this model at this or a newer version.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def install(
    bundle: Path, store: Path, public_key: Path | None, allow_unsigned: bool, allow_downgrade: bool, unless_newer: bool, as_json: bool
) -> None:
    """Install BUNDLE into a device's model store and make it current (standalone mode).

    The bundle is verified first (hashes, signature, self-test on this device); nothing
    is written for a bundle that fails. A running `edgepack serve --store` switches to it.
    Power-safe: a crash at any point leaves the store on the old bundle or the new one.
    Exit status: 0 installed (or already current), 3 bundle refused, 4 store unusable.
    """
    from runtime.errors import BundleError
    from runtime.store import DowngradeError, ModelStore, StoreError, is_older

    keys = _key_options(public_key, allow_unsigned)
    try:
        target = ModelStore(store, create=True)
        if unless_newer:
            current = target.state().current
            if current is not None:
                from runtime import read_bundle

                incoming = read_bundle(bundle, **keys).manifest.get("model", {})
                if incoming.get("name") == current.name and not is_older(current.name, current.version, str(incoming.get("version"))):
                    _report(as_json, "kept", current, None, f"store already serves {current.name} v{current.version}; left as is")
                    return
        report = target.install(bundle, allow_downgrade=allow_downgrade, **keys)
    except StoreError as exc:
        raise _failure(exc, EXIT_BUNDLE if isinstance(exc, DowngradeError) else EXIT_STORE) from exc
    except BundleError as exc:
        raise _failure(exc, EXIT_BUNDLE) from exc
    entry = report.entry
    if not report.changed:
        _report(as_json, "unchanged", entry, report.previous, f"{entry.name} v{entry.version} is already current")
        return
    signature = "signature verified" if report.signature_verified else "signature NOT checked"
    was = f" (was v{report.previous.version})" if report.previous else ""
    _report(as_json, "installed", entry, report.previous, f"installed {entry.name} v{entry.version}{was}: {signature}, self-test passed")


def _report(as_json: bool, status: str, entry: Any, previous: Any, text: str) -> None:
    from dataclasses import asdict

    if as_json:
        click.echo(json.dumps({"status": status, "current": asdict(entry), "previous": asdict(previous) if previous else None}))
    else:
        click.echo(f"{text}  (sha256 {entry.sha256})")


@click.group(short_help="Look at or roll back a device's model store")
def store() -> None:
    """Look at or roll back a device's model store."""


@store.command("status", short_help="Print the store's pointer as JSON")
@click.option("--store", "root", required=True, type=click.Path(file_okay=False, path_type=Path))
def store_status(root: Path) -> None:
    """Print the store's pointer (current and previous bundle) as JSON."""
    from dataclasses import asdict

    from runtime.store import ModelStore, StoreError

    try:
        state = ModelStore(root).state()
    except StoreError as exc:
        raise _failure(exc, EXIT_STORE) from exc
    click.echo(json.dumps(asdict(state), indent=2, sort_keys=True))


@store.command("rollback", short_help="Make the previous bundle current again")
@click.option("--store", "root", required=True, type=click.Path(file_okay=False, path_type=Path))
def store_rollback(root: Path) -> None:
    """Make the previous bundle current again (a running serve --store follows)."""
    from runtime.store import ModelStore, StoreError

    try:
        state = ModelStore(root).rollback()
    except StoreError as exc:
        raise _failure(exc, EXIT_STORE) from exc
    click.echo(f"rolled back to {state.current.name} v{state.current.version}  (sha256 {state.current.sha256})")  # type: ignore[union-attr]


@click.command(context_settings={"ignore_unknown_options": False}, short_help="Run serve --store and sync together, supervised")
@click.option("--store", "root", required=True, type=click.Path(file_okay=False, path_type=Path), help="The model store to serve from.")
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path), help="serve's unix socket.")
@click.option("--socket-group", help="Group given access to the socket.")
@click.option("--host", help="serve's loopback TCP address instead of a socket.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=_KEY_HELP)
@click.option("--allow-unsigned", is_flag=True, help=_UNSIGNED_HELP)
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="Telemetry buffer: serve records into it, sync sends it.")
@click.option("--endpoint", help="Collector URL; without it, no sync runs.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), help="The device token (with --endpoint).")
@click.option("--sync-args", default="", help="Extra `edgepack sync` options, split on spaces (e.g. '--interval 120').")
@click.option("--updates", "updates_root", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also run the update loop (edgepack updates), trusting this 1.root.json; needs --endpoint, --device-id.")
@click.option("--device-id", help="This device's id, for the update loop's staged rollout.")
@click.option("--updates-args", default="", help="Extra `edgepack updates` options, split on spaces (e.g. '--channel canary').")
def agent(
    root: Path,
    socket_path: Path | None,
    socket_group: str | None,
    host: str | None,
    port: int,
    public_key: Path | None,
    allow_unsigned: bool,
    db_path: Path | None,
    endpoint: str | None,
    token_file: Path | None,
    sync_args: str,
    updates_root: Path | None = None,
    device_id: str | None = None,
    updates_args: str = "",
) -> None:
    """Run the device agent: `edgepack serve --store` and `edgepack sync`, supervised together.

    When one of them exits, the other is stopped and the agent exits with the first
    one's status (so a container restarts both); SIGTERM/SIGINT stop both cleanly.
    """
    from edgepack.agent import Agent

    if public_key is None and not allow_unsigned:
        _key_options(None, False)
    if (endpoint is None) != (token_file is None):
        raise click.UsageError("--endpoint and --token-file go together")
    if endpoint is not None and db_path is None:
        raise click.UsageError("sync needs --db, the buffer serve records into")
    serve_argv = ["serve", "--store", str(root)]
    serve_argv += ["--socket", str(socket_path)] if socket_path else ["--host", host or "127.0.0.1", "--port", str(port)]
    if socket_group:
        serve_argv += ["--socket-group", socket_group]
    serve_argv += ["--public-key", str(public_key)] if public_key else ["--allow-unsigned"]
    if db_path is not None:
        serve_argv += ["--buffer", str(db_path)]
    children = {"serve": serve_argv}
    if endpoint is not None:
        children["sync"] = ["sync", "--db", str(db_path), "--endpoint", endpoint, "--token-file", str(token_file), *sync_args.split()]
    if updates_root is not None:
        if endpoint is None or device_id is None:
            raise click.UsageError("--updates needs --endpoint, --token-file and --device-id")
        keys = ["--public-key", str(public_key)] if public_key else ["--allow-unsigned"]
        children["updates"] = ["updates", "--store", str(root), "--endpoint", endpoint, "--token-file", str(token_file),
                               "--device-id", device_id, "--trusted-root", str(updates_root), *keys, *updates_args.split()]
    sys.exit(Agent(children).run())


COMMANDS: list[click.Command] = [serve, install, store, agent]
