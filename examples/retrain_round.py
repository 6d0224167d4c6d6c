"""One round of passive retraining, end to end; run it on a schedule.

    export labeled data -> retrain -> log -> promote if better -> build

1. Export the records home holds for the model, joined with their ground truth
   (``home.feedback.labeled``: from the collector's database, or ``GET /v1/labeled`` with an admin
   token), predicted within ``--since``.
2. Split them by time: the older rows train, the newest ``--holdout`` fraction scores.
3. Retrain: a fresh copy of the champion's own estimator (``sklearn.base.clone``: same
   pipeline and hyper-parameters) fitted on the training rows, so the script works for
   any scikit-learn model in the registry.
4. Log it to MLflow and register it as a new version of the model.
5. ``edgepack promote``'s library scores the new version and the champion on the same
   held-out rows and moves the alias only if the new one wins by ``--min-gain`` and
   passes the guards; the decision is recorded either way (``edgepack history NAME``).
6. When promoted, build the bundle from the alias (``--sign-key`` to sign it), ready to
   release to the fleet.

Exit status: 0 promoted and built, 3 kept (or too few labeled rows to decide), 1 error.

Example (weekly, Monday 03:00, from cron)::

    0 3 * * 1  cd /srv/edgepack && python examples/retrain_round.py --model fire-risk \\
        --tracking-uri sqlite:///mlflow.db --collector-db /srv/home/collector.db \\
        --since 30d --metric roc_auc --min-gain 0.005 --guard recall_drop=0.05 \\
        --sign-key keys/edge.pem --out dist/
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

KEPT = 3


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", required=True, help="Registered model name.")
    parser.add_argument("--alias", default="champion", help="The alias that names production.")
    parser.add_argument("--tracking-uri", required=True, help="MLflow registry URI, e.g. sqlite:///mlflow.db.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--collector-db", help="The collector's database: its SQLite file or a postgresql:// URI.")
    source.add_argument("--collector-url", help="The collector's URL (with --token-file, an admin token).")
    parser.add_argument("--token-file", type=Path, help="Admin token for --collector-url.")
    parser.add_argument("--since", default="30d", help="Window of labeled records (e.g. 30d, all).")
    parser.add_argument("--holdout", type=float, default=0.3, help="Newest fraction of rows kept for scoring.")
    parser.add_argument("--min-rows", type=int, default=50, help="Fewest labeled rows to run a round at all.")
    parser.add_argument("--metric", default="roc_auc", choices=["roc_auc", "accuracy", "f1", "mae", "rmse"])
    parser.add_argument("--min-gain", type=float, default=0.0)
    parser.add_argument("--guard", action="append", default=[], help="recall_drop=X, min_rows=N, max_drop.METRIC=X.")
    parser.add_argument("--trust-type", action="append", default=[], help="A type a skops model may hold.")
    parser.add_argument("--sign-key", type=Path, help="Sign the bundle with this Ed25519 private key.")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="Directory for the bundle.")
    return parser.parse_args(argv)


def _labeled(args: argparse.Namespace, work: Path):  # -> (DataFrame, feature map)
    from home.feedback.labeled import export_labeled, parse_since
    from packager.promotion import fetch_labeled, read_table

    if args.collector_db is not None:
        path = work / "labeled.parquet"
        export_labeled(args.collector_db, model=args.model, since_seconds=parse_since(args.since), out=path)
        return read_table(path)
    if args.token_file is None:
        sys.exit("error: --collector-url needs --token-file (an admin token)")
    return fetch_labeled(args.collector_url, model=args.model, token=args.token_file.read_text().strip(), since=args.since)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.base import clone

    from packager import build_bundle, registry
    from packager.errors import PackagerError
    from packager.options import DEFAULT_TRUSTED_TYPES
    from packager.promotion import PromoteOptions, parse_guard, prepare, promote
    from packager.promotion.decision import input_columns

    trusted = DEFAULT_TRUSTED_TYPES + tuple(args.trust_type)
    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-round-") as tmp:
            work = Path(tmp)
            # 1. Export labeled data.
            frame, features = _labeled(args, work)
            frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
            print(f"1/6 exported {len(frame)} labeled records of {args.model} (since {args.since})")
            if len(frame) < args.min_rows:
                print(f"kept: {len(frame)} labeled rows, fewer than --min-rows {args.min_rows}; nothing retrained")
                return KEPT
            # 2. Split by time: train on the older rows, score on the newest.
            cut = int(len(frame) * (1 - args.holdout))
            train, holdout = frame.iloc[:cut], frame.iloc[cut:]
            # 3. Retrain the champion's estimator on the fresh rows.
            champion_uri = f"models:/{args.model}@{args.alias}"
            resolved = registry.resolve(champion_uri, args.tracking_uri)
            loaded = registry.load(registry.download(resolved, work / "champion"), trusted_types=trusted)
            columns = input_columns(loaded)
            rows = prepare(train, features, columns, label_column="label", source="training rows")
            model = clone(loaded.model).fit(rows.X, rows.y)
            print(f"2/6 retrained {type(model).__name__} of version {resolved.version} on {len(train)} rows")
            # 4. Log and register the new version.
            client = MlflowClient(tracking_uri=args.tracking_uri, registry_uri=args.tracking_uri)
            mlflow.set_tracking_uri(args.tracking_uri)
            mlflow.set_registry_uri(args.tracking_uri)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with mlflow.start_run(run_name=f"retrain {args.model} on {args.since} of labeled device data") as run:
                    mlflow.log_params({"trained_on": f"labeled device records, {args.since}", "rows": len(train),
                                       "retrained_from_version": resolved.version, "data_sha256": rows.fingerprint})
                    info = mlflow.sklearn.log_model(
                        model, name="model", signature=infer_signature(rows.X, model.predict(rows.X)),
                        input_example=rows.X.head(5), pip_requirements=["scikit-learn"],
                        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)) or None,
                    )
            version = str(client.create_model_version(args.model, info.model_uri, run_id=run.info.run_id).version)
            print(f"3/6 registered models:/{args.model}/{version}")
            # 5. Promote only if better on the same held-out rows.
            options = PromoteOptions(alias=args.alias, metric=args.metric, min_gain=args.min_gain,
                                     guards=tuple(parse_guard(g) for g in args.guard), trusted_types=trusted)
            decision = promote(
                args.tracking_uri, args.model, version, options=options,
                rows=lambda cols: prepare(holdout, features, cols, label_column="label",
                                          source=f"newest {len(holdout)} labeled records"),
            )
            print(f"4/6 {decision.reason}")
            if not decision.promoted:
                print("5/6 nothing to build: the champion stays")
                return KEPT
            # 6. Build the bundle from the alias, now the new version.
            args.out.mkdir(parents=True, exist_ok=True)
            report = build_bundle(
                f"models:/{args.model}@{args.alias}", args.out / f"{args.model}.edgepkg", tracking_uri=args.tracking_uri,
                reference_data=rows.X, signing_key=args.sign_key,
            )
            print(f"5/6 built {report.path} (sha256 {report.sha256[:16]}, version {report.model_version})")
            print("6/6 done: release the bundle to the fleet")
            return 0
    except PackagerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
