"""``edgepack release ...`` and ``edgepack fleet status`` (home), ``edgepack updates`` (device).

The library does the work (``home.releases``, ``edgepack.updates``); these commands parse,
call, print and map errors to exit codes: 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import click

_RELEASES = click.option(
    "--releases", "releases_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The release repository (what the collector serves: --releases of edgepack collector).",
)
_CHANNEL = click.option("--channel", default="stable", show_default=True, help="The channel.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _home() -> Any:
    try:
        from home import releases
    except ImportError as exc:  # tuf or starlette missing on this machine
        raise click.ClickException(f"releases need the home side: pip install 'edgepack[collector]' ({exc})") from exc
    return releases


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _open(releases_dir: Path) -> Any:
    releases = _home()
    try:
        return releases.ReleaseRepository(releases_dir)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc


def _print_release(release: Any, as_json: bool, verb: str) -> None:
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps(asdict(release) | {"devices": list(release.devices)}, sort_keys=True))
        return
    who = f"{release.rollout:g}% of devices" + (f" and {', '.join(release.devices)}" if release.devices else "")
    state = " (halted)" if release.halted else ""
    click.echo(f"{verb} release {release.release} on {release.channel}: {release.model} v{release.version} "
               f"(sha256 {release.bundle_sha256[:12]}) for {who}{state}")


@click.group("release")
def release_group() -> None:
    """Publish model bundles to devices as signed (TUF) releases on channels."""


@release_group.command("init", short_help="Create a release repository and its four TUF keys")
@_RELEASES
def release_init(releases_dir: Path) -> None:
    """Create a release repository: root, targets, snapshot and timestamp keys (Ed25519) and
    the first metadata. Provision devices with RELEASES/metadata/1.root.json; move
    RELEASES/keys/root.pem offline."""
    releases = _home()
    try:
        repo = releases.ReleaseRepository.create(releases_dir)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    click.echo(f"release repository created in {repo.root}")
    click.echo(f"devices trust: {repo.metadata_dir / '1.root.json'}")
    click.echo(f"keys: {repo.keys_dir} (root.pem belongs offline)")


@release_group.command("publish", short_help="Publish a bundle as the channel's release")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_RELEASES
@_CHANNEL
@click.option("--rollout", default=None, help="Percent of devices, e.g. 10% [100%, or 0% with --devices].")
@click.option("--devices", default="", help="Comma-separated device ids that take it whatever the rollout.")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Verify the bundle's signature first.")
@click.option("--tracking-uri", help="Also tag the registry version the bundle came from (edgepack.release.CHANNEL), for 'edgepack history'.")
@_JSON
def release_publish(bundle: Path, releases_dir: Path, channel: str, rollout: str | None, devices: str, public_key: Path | None,
                    tracking_uri: str | None, as_json: bool) -> None:
    """Verify BUNDLE (hashes, signature, self-test) and make it the channel's release for
    the devices the rollout selects."""
    releases = _home()
    repo = _open(releases_dir)
    names = tuple(d for d in (x.strip() for x in devices.split(",")) if d)
    try:
        percent = releases.parse_rollout(rollout) if rollout is not None else (0.0 if names else 100.0)
        release = repo.publish(bundle, channel=channel, rollout=percent, devices=names, public_key=public_key)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    if tracking_uri is not None:
        _tag_registry(tracking_uri, release)
    _print_release(release, as_json, "published")


def _tag_registry(tracking_uri: str, release: Any) -> None:
    # The release is published whatever happens here: a registry that cannot be tagged
    # costs 'edgepack history' its release column, not the fleet its update.
    from ..extras import require

    require("packager")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    value = f"release {release.release}: bundle {release.bundle_sha256[:16]}, rollout {release.rollout:g}%"
    try:
        MlflowClient(tracking_uri, tracking_uri).set_model_version_tag(
            release.model, release.version, f"edgepack.release.{release.channel}", value
        )
    except MlflowException as exc:
        raise click.ClickException(
            f"release {release.release} is published, but {release.model} v{release.version} in {tracking_uri} "
            f"could not be tagged ({exc}); tag it by hand: edgepack.release.{release.channel} = {value!r}"
        ) from exc


@release_group.command("promote", short_help="Widen the channel's release (and lift a halt)")
@_RELEASES
@_CHANNEL
@click.option("--rollout", default="100%", show_default=True, help="The new percentage.")
@_JSON
def release_promote(releases_dir: Path, channel: str, rollout: str, as_json: bool) -> None:
    """Set the rollout of the channel's current release (devices already in stay in)."""
    releases = _home()
    repo = _open(releases_dir)
    try:
        release = repo.promote(channel=channel, rollout=releases.parse_rollout(rollout))
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    _print_release(release, as_json, "promoted")


@release_group.command("halt", short_help="Stop the channel's release reaching more devices")
@_RELEASES
@_CHANNEL
@_JSON
def release_halt(releases_dir: Path, channel: str, as_json: bool) -> None:
    """Halt the channel's release: devices not on it yet do not take it; devices on it stay."""
    releases = _home()
    repo = _open(releases_dir)
    try:
        release = repo.halt(channel=channel)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    _print_release(release, as_json, "halted")


@release_group.command("rollback", short_help="Publish a new release of the previous bundle")
@_RELEASES
@_CHANNEL
@click.option("--to", "to_release", type=int, help="The release whose bundle to go back to [the previous bundle].")
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Or go back to this bundle file (e.g. the one devices were provisioned with).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Verify --bundle's signature.")
@_JSON
def release_rollback(releases_dir: Path, channel: str, to_release: int | None, bundle: Path | None, public_key: Path | None,
                     as_json: bool) -> None:
    """Roll the channel back: a new release (new number, kind 'rollback') of an older bundle.
    Devices install it although its model version is older, because the signed release says so."""
    releases = _home()
    repo = _open(releases_dir)
    try:
        release = repo.rollback(channel=channel, to_release=to_release, bundle=bundle, public_key=public_key)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    _print_release(release, as_json, "rolled back with")


@release_group.command("refresh", short_help="Re-sign snapshot and timestamp before they expire")
@_RELEASES
@click.option("--force", is_flag=True, help="Re-sign even when not due.")
def release_refresh(releases_dir: Path, force: bool) -> None:
    """Re-sign the repository's snapshot and timestamp when past half their validity (run it from cron)."""
    releases = _home()
    repo = _open(releases_dir)
    try:
        changed = repo.refresh(force=force)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    click.echo("re-signed" if changed else "nothing due")


@release_group.command("rotate-key", short_help="Replace one role's signing key")
@click.argument("role", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@_RELEASES
def release_rotate_key(role: str, releases_dir: Path) -> None:
    """Replace ROLE's key: a new root version lists it (signed with the root key, which must be present)."""
    releases = _home()
    repo = _open(releases_dir)
    try:
        keyid = repo.rotate_key(role)
    except releases.ReleaseError as exc:
        raise _fail(exc) from exc
    click.echo(f"{role} key rotated: new keyid {keyid[:16]}, root version {repo.root_version()}")


@release_group.command("list", short_help="Every release, oldest first")
@_RELEASES
@_JSON
def release_list(releases_dir: Path, as_json: bool) -> None:
    """The release history and what each channel offers now."""
    repo = _open(releases_dir)
    current = {r.channel: r.release for r in repo.channels().values()}
    for release in repo.history():
        if as_json:
            _print_release(release, True, "")
        else:
            mark = "*" if current.get(release.channel) == release.release else " "
            click.echo(f"{mark} {release.release:>4} {release.channel:<10} {release.kind:<8} {release.model} v{release.version} "
                       f"{release.bundle_sha256[:12]}")


@click.group("fleet")
def fleet_group() -> None:
    """What the devices report about releases."""


@fleet_group.command("status", short_help="Per release: devices offered, downloaded, active, failed, rolled back")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The collector's database (read locally).")
@click.option("--releases", "releases_dir", type=click.Path(file_okay=False, path_type=Path), help="The release repository (with --db).")
@click.option("--endpoint", help="Or ask a running collector, with an admin token.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Admin token (with --endpoint).")
@_JSON
def fleet_status(db_path: Path | None, releases_dir: Path | None, endpoint: str | None, token_file: Path | None, as_json: bool) -> None:
    """Per release: how many devices were offered it, downloaded it, run it, failed it or
    rolled it back, and each device's state with its reason."""
    if (db_path is None) == (endpoint is None):
        raise click.UsageError("give --db (read the collector's database here) or --endpoint with --token-file")
    if endpoint is not None:
        import httpx

        if token_file is None:
            raise click.UsageError("--endpoint needs --token-file (an admin token)")
        token = token_file.read_text().strip()
        try:
            response = httpx.get(endpoint.rstrip("/") + "/v1/releases/fleet", headers={"authorization": f"Bearer {token}"}, timeout=30)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {endpoint}: {exc}") from exc
        if response.status_code != 200:
            raise click.ClickException(f"{endpoint} answered {response.status_code}: {response.text[:300]}")
        status = response.json()
    else:
        releases = _home()
        history = _open(releases_dir).history() if releases_dir is not None else []
        status = releases.fleet_status(db_path, history)
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
        return
    for entry in status["releases"]:
        counts = entry["counts"]
        click.echo(f"release {entry['release']} {entry.get('channel') or ''} {entry.get('model') or ''} v{entry.get('version') or '?'} "
                   f"({entry.get('kind') or 'reports'}): " + ", ".join(f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in
                                                           ("offered", "downloaded", "active", "failed", "rolled_back")))
        for device, info in sorted(entry["devices"].items()):
            if info["state"] in ("failed", "rolled_back"):
                click.echo(f"  {device}: {info['state']}: {info['reason']}")


@click.command("updates", short_help="Poll home for releases and install them into the model store")
@click.option("--store", "root", required=True, type=click.Path(file_okay=False, path_type=Path), help="The model store.")
@click.option("--endpoint", required=True, help="The home service URL.")
@click.option("--token-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The device token.")
@click.option("--device-id", required=True, help="This device's id (as in its token): its rollout bucket.")
@click.option("--trusted-root", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The release repository's metadata/1.root.json, provisioned on the device.")
@_CHANNEL
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The bundle signing key.")
@click.option("--allow-unsigned", is_flag=True, help="Install unsigned bundles (TUF still checks them).")
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds between polls.")
@click.option("--gate-predictions", default=20, show_default=True, type=click.IntRange(min=1), help="Health gate: N predictions.")
@click.option("--gate-seconds", default=60.0, show_default=True, type=click.FloatRange(min=0), help="Health gate: M seconds at most.")
@click.option("--max-error-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1), help="Health gate: failing rows.")
@click.option("--max-flag-rate", type=click.FloatRange(0, 1), help="Health gate: flagged rows [not checked].")
@click.option("--once", is_flag=True, help="One poll (and, if a release was installed, its health gate), then exit.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
def updates_command(root: Path, endpoint: str, token_file: Path, device_id: str, trusted_root: Path, channel: str,
                    public_key: Path | None, allow_unsigned: bool, interval: float, gate_predictions: int, gate_seconds: float,
                    max_error_rate: float, max_flag_rate: float | None, once: bool, log_level: str) -> None:
    """Run the device's update loop: poll the channel's signed release (one conditional
    request when nothing changed), take it if the staged rollout selects this device,
    verify (TUF, then the bundle's hashes, signature and self-test), install it into the
    store (serve --store switches without a restart), and roll back automatically if its
    health gate fails. Runs until SIGTERM/SIGINT."""
    import signal

    try:
        from edgepack.updates import GateOptions, UpdateError, UpdateLoop, UpdateOptions
    except ImportError as exc:
        raise click.ClickException(f"the update loop needs tuf: pip install edgepack ({exc})") from exc
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    options = UpdateOptions(
        store=root, endpoint=endpoint, token=token_file.read_text().strip(), device_id=device_id, trusted_root=trusted_root,
        channel=channel, public_key=public_key, allow_unsigned=allow_unsigned, interval=interval,
        gate=GateOptions(predictions=gate_predictions, seconds=gate_seconds, max_error_rate=max_error_rate, max_flag_rate=max_flag_rate),
    )
    try:
        loop = UpdateLoop(options)
    except UpdateError as exc:
        raise _fail(exc) from exc
    try:
        if once:
            result = loop.poll_once()
            while loop.state.gate is not None:
                import time

                time.sleep(min(1.0, interval))
                result = loop.poll_once()
            click.echo(json.dumps({"outcome": result.outcome, "release": result.release, "detail": result.detail}))
            if result.outcome in ("refused", "rolled_back"):
                sys.exit(1)
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        loop.run(stop=stop)
    finally:
        loop.close()


COMMANDS: list[click.Command] = [release_group, fleet_group, updates_command]
