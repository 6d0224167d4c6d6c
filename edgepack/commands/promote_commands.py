"""``edgepack promote`` (and ``--rollback``) and ``edgepack history``: the registry side of
passive retraining. The library is ``packager.promotion``; these commands only parse,
call it and map its errors to exit codes.

Exit status of ``promote``: 0 the challenger was promoted (or the rollback done), 3 the
champion was kept (the decision is recorded either way), 1 an error (nothing moved),
2 a usage error.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import click

from ..extras import MissingExtraError, require

KEPT = 3
"""Exit status when the champion is kept."""
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def _require_packager() -> None:
    try:
        require("packager")
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc


def _scores(scores: dict[str, Any] | None, metric: str | None) -> str:
    if not scores:
        return "-"
    main = scores.get(metric) if metric else None
    shown = f"{metric}={main:.4f}" if isinstance(main, float) else ""
    others = [f"{k}={v:.4f}" for k, v in sorted(scores.items()) if k not in (metric, "rows", "recall") and isinstance(v, float)]
    return " ".join(p for p in [shown, *others, f"rows={scores.get('rows', '?')}"] if p)


def _print_decision(decision: Any) -> None:
    click.echo(decision.reason)
    if decision.champion_scores is not None:
        click.echo(f"  champion   v{decision.champion}: {_scores(decision.champion_scores, decision.metric)}")
    if decision.challenger_scores is not None:
        click.echo(f"  challenger v{decision.challenger}: {_scores(decision.challenger_scores, decision.metric)}")
    if decision.data_fingerprint:
        click.echo(f"  data sha256 {decision.data_fingerprint}")
    click.echo(f"  recorded as MLflow run {decision.run_id}")


@click.command("promote")
@click.argument("model_uri", required=False)
@click.option("--over", "alias", default="champion", show_default=True, help="The alias that names production.")
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Labeled rows to score on (.parquet or .csv; inputs by name, truth in --label-column).")
@click.option("--from-collector", "collector_url", help="Score on home's labeled records (GET /v1/labeled; needs --token-file).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Admin token for --from-collector.")
@click.option("--since", default="30d", show_default=True, help="Window of labeled records with --from-collector (e.g. 30d, all).")
@click.option("--metric", type=click.Choice(["roc_auc", "accuracy", "f1", "mae", "rmse"]), help="What decides.")
@click.option("--min-gain", default=0.0, show_default=True, type=float, help="How much better the challenger must be.")
@click.option("--guard", "guards", multiple=True,
              help="recall_drop=X, min_rows=N or max_drop.METRIC=X (repeatable).")
@click.option("--label-column", default="label", show_default=True, help="The column holding the truth.")
@click.option("--rollback", "rollback_name", metavar="NAME", help="Move --over back to the champion the last promotion replaced.")
@click.option("--tracking-uri", help="MLflow registry URI [MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--trust-pickle", is_flag=True, help="Load pickled models (only from a registry you trust).")
@click.option("--trust-type", "trust_types", multiple=True, help="A type a skops model may hold beyond what skops trusts.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def promote_command(
    model_uri: str | None, alias: str, data_path: Path | None, collector_url: str | None, token_file: Path | None,
    since: str, metric: str | None, min_gain: float, guards: tuple[str, ...], label_column: str,
    rollback_name: str | None, tracking_uri: str | None, trust_pickle: bool, trust_types: tuple[str, ...], as_json: bool,
) -> None:
    """Promote models:/NAME/VERSION over the alias only if it scores better on the same rows.

    The challenger and the champion (the version --over points at) are scored on the same
    labeled rows (--data FILE, or --from-collector URL); the alias (and the stage, where
    the registry uses stages) moves only if the challenger wins on --metric by at least
    --min-gain and passes every --guard. Either way the decision is recorded as an MLflow
    run and as tags on both versions. Exit status: 0 promoted, 3 kept, 1 error.
    """
    _require_packager()
    from packager.errors import PackagerError
    from packager.options import DEFAULT_TRUSTED_TYPES
    from packager.promotion import PromoteOptions, fetch_labeled, parse_guard, prepare, promote, read_table, rollback
    from packager.registry import tracking_uri_from

    uri = tracking_uri_from(tracking_uri)
    try:
        if rollback_name is not None:
            if model_uri or data_path or collector_url:
                raise click.UsageError("--rollback NAME takes no MODEL_URI, --data or --from-collector")
            decision = rollback(uri, rollback_name, alias=alias)
        else:
            if model_uri is None:
                raise click.UsageError("give the challenger as models:/NAME/VERSION (or --rollback NAME)")
            match = _VERSION_URI.match(model_uri)
            if match is None:
                raise click.UsageError(f"challenger {model_uri!r}: expected models:/NAME/VERSION with a version number")
            if (data_path is None) == (collector_url is None):
                raise click.UsageError("give the rows to score on: either --data FILE or --from-collector URL")
            if metric is None:
                raise click.UsageError("--metric is required: roc_auc, accuracy, f1 (classifiers), mae or rmse (regressors)")
            if collector_url is not None and token_file is None:
                raise click.UsageError("--from-collector needs --token-file with an admin token")
            name, version = match["name"], match["version"]
            options = PromoteOptions(
                alias=alias, metric=metric, min_gain=min_gain, guards=tuple(parse_guard(g) for g in guards),
                trust_pickle=trust_pickle,
                trusted_types=DEFAULT_TRUSTED_TYPES + tuple(t for t in trust_types if t not in DEFAULT_TRUSTED_TYPES),
            )

            def rows(columns: list[str]) -> Any:
                if data_path is not None:
                    frame, features = read_table(data_path)
                    source = str(data_path)
                else:
                    token = token_file.read_text().strip()  # type: ignore[union-attr]
                    frame, features = fetch_labeled(collector_url, model=name, token=token, since=since)  # type: ignore[arg-type]
                    source = f"{collector_url.rstrip('/')}/v1/labeled?model={name}&since={since}"  # type: ignore[union-attr]
                return prepare(frame, features, columns, label_column=label_column, source=source)

            decision = promote(uri, name, version, rows=rows, options=options)
    except PackagerError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({k: v for k, v in decision.__dict__.items()}, indent=2, sort_keys=True, default=str))
    else:
        _print_decision(decision)
    if not decision.promoted:
        raise SystemExit(KEPT)


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _version_line(role: str, info: dict[str, Any] | None, scores: dict[str, Any], metric: str | None) -> str:
    if info is None:
        return f"  {role:<10} (none)"
    bundles = ", ".join(sha[:12] for sha in info["bundles"]) or "no bundle built"
    releases = ", ".join(f"{v}" for v in info["releases"].values())
    line = f"  {role:<10} v{info['version']}: {_scores(scores, metric)}; bundles: {bundles}"
    return line + (f"; releases: {releases}" if releases else "")


@click.command("history")
@click.argument("name")
@click.option("--tracking-uri", help="MLflow registry URI [MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON (newest first).")
def history_command(name: str, tracking_uri: str | None, as_json: bool) -> None:
    """List every promotion decision about model NAME, newest first.

    Each shows when, the alias, champion and challenger with their metrics, the outcome
    and its reason, and which bundle (and release) each version became.
    """
    _require_packager()
    from packager.errors import PackagerError
    from packager.promotion import decisions
    from packager.registry import tracking_uri_from

    try:
        entries = decisions(tracking_uri_from(tracking_uri), name)
    except PackagerError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(entries, indent=2, sort_keys=True))
        return
    if not entries:
        click.echo(f"no promotion decisions recorded for {name!r}")
        return
    for entry in entries:
        click.echo(f"{_when(entry['decided_at'])}  {entry['outcome']:<11} @{entry['alias']}  {entry['reason']}")
        click.echo(_version_line("champion", entry["champion_version"], entry["champion_scores"], entry["metric"]))
        click.echo(_version_line("challenger", entry["challenger_version"], entry["challenger_scores"], entry["metric"]))
        if entry["data_fingerprint"]:
            click.echo(f"  data sha256 {entry['data_fingerprint'][:16]}  run {entry['run_id']}")


COMMANDS: list[click.Command] = [promote_command, history_command]
