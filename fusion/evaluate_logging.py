"""`fusion evaluate --log-to RUN_ID`: an evaluation recorded on an existing MLflow run.

The layout is the nightly pipeline's (fusion/pipeline.py `_score`): `eval/` holds the
summary, tables, figure and sample images, `test/<metric>` the model's means and
`baseline/<method>/<metric>` the baselines', so `fusion report` can set a run made by
`fusion import-weights --register` (the authors' weights) beside the nightly runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fusion.errors import FusionError


def _target():
    from fusion import tracking

    # the store `runs:/...` URIs resolve in: MLFLOW_TRACKING_URI or the workspace's own
    return tracking.TrackingTarget(tracking.current_uri(), "", None)


def check_run(run_id: str) -> None:
    from fusion import tracking

    t = _target()
    try:
        tracking.get_run(t, run_id)
    except tracking.RunNotFound as exc:
        raise FusionError(f"--log-to {run_id}: no such run in {t.uri} ({exc.detail})") from None


def log_evaluation(run_id: str, result, samples: list[dict], test_set, model_method: str) -> None:
    from fusion import tracking
    from fusion.evaluate import run_metrics, save_samples, write_reports
    from fusion.promotion import TEST_SET_TAG
    from fusion.report import evaluation_figure

    t = _target()
    with tempfile.TemporaryDirectory(prefix="fusionflow-eval-") as tmp:
        folder = Path(tmp) / "eval"
        write_reports(result, folder)
        evaluation_figure(samples, test_set.source_labels, result.methods, folder / "figure.png", title=test_set.name)
        save_samples(samples, folder / "samples", test_set.source_labels)
        tracking.log_artifacts(t, run_id, folder, "eval")
    tracking.log_metrics(t, run_id, run_metrics(result, model_method))
    tracking.set_tags(t, run_id, {TEST_SET_TAG: test_set.version()})
