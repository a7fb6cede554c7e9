"""Champion promotion in the MLflow model registry.

Every evaluated nightly run is registered as a new version of `<prefix>-<task>-<model>`
(source: the run's MLflow model, fusion/tracking/model_flavor.py, which holds its best checkpoint).
It takes the `@champion` alias only if it beats the best classical baseline scored in the
same run (`promote.require_beat_baselines`, on by default: a model worse than averaging is
not served) and the current champion on the task's validation metric, measured on the same
test data (the `eval.test_set` tag: the sha256 of the test pairs' bytes); otherwise it
becomes `@challenger`. When the champion was scored on other test data it is re-scored on the
candidate's test set first, so the two numbers always compare like with like. The
decision and the numbers behind it are logged on the candidate run (tags `promote.*` and
`promote/decision.json`) and on the model version.

`fusion fuse --model models:/<name>@champion` then fuses with the current champion.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from fusion import tracking
from fusion.config import Config
from fusion.errors import FusionError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TEST_SET_TAG = "eval.test_set"


@dataclass(frozen=True)
class Decision:
    model_name: str
    version: str
    alias: str  # champion | challenger
    metric: str
    higher_is_better: bool
    candidate: float
    champion: float | None  # None: there was no champion
    champion_version: str | None
    rescored: bool  # the champion was re-scored on the candidate's test set
    reason: str
    best_baseline: str | None = None  # the classical baseline it had to beat, if required
    baseline_value: float | None = None


def model_name(cfg: Config) -> str:
    return f"{cfg.promote.registry_prefix}-{cfg.train.task}-{cfg.train.model}"


def metric_for(cfg: Config, has_gt: bool) -> str:
    if cfg.promote.metric != "auto":
        return cfg.promote.metric
    return "SSIM_gt" if has_gt else "Qabf"


def promote(t: tracking.TrackingTarget, run_id: str, cfg: Config, rescore=None) -> Decision:
    """Register `run_id` and move the aliases. `rescore(champion_run_id, metric) -> float`
    scores the champion on the candidate's test set (needed when their test data differ)."""
    from fusion.metrics import METRICS

    c = tracking.client(t)
    run = c.get_run(run_id)
    if "promote.version" in run.data.tags:  # already decided (a re-run of a nightly): the same answer
        return _recorded(t, run_id)
    has_gt = run.data.tags.get("data.synthetic") == "true" or any(k.endswith("_gt") for k in run.data.metrics)
    metric = metric_for(cfg, has_gt)
    key = f"test/{metric}"
    if key not in run.data.metrics:
        raise FusionError(
            f"run {run_id} has no {key} metric: evaluate it before promoting "
            f"(promote.metric={cfg.promote.metric!r}; logged: {sorted(k for k in run.data.metrics if k.startswith('test/'))})"
        )
    candidate = run.data.metrics[key]
    higher = METRICS[metric].higher_is_better
    name = model_name(cfg)
    tracking.ensure_registered_model(
        c,
        name,
        f"{cfg.train.model} fusion models for {cfg.train.task}; "
        f"@{CHAMPION} serves, @{CHALLENGER} lost its last comparison",
    )
    logged = {a.path for a in c.list_artifacts(run_id)}
    source = f"runs:/{run_id}/model" if "model" in logged else f"runs:/{run_id}/checkpoints"
    mv = c.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={"variant": cfg.train.variant, TEST_SET_TAG: run.data.tags.get(TEST_SET_TAG, "unknown")},
    )
    champ = tracking.version_by_alias(c, name, CHAMPION)

    champ_value, rescored = None, False
    best_baseline, baseline_value, loses_to_baseline = None, None, None
    if cfg.promote.require_beat_baselines:
        best_baseline, baseline_value, loses_to_baseline = _against_baselines(
            run.data.metrics, metric, candidate, higher, cfg.promote.min_improvement
        )
    if loses_to_baseline is not None:
        alias, reason = CHALLENGER, loses_to_baseline
    elif champ is None:
        alias, reason = (
            CHAMPION,
            "no champion yet"
            + (
                f"; {metric} {candidate:.6g} beats the best baseline {best_baseline} {baseline_value:.6g}"
                if best_baseline
                else ""
            ),
        )
    else:
        champ_run = c.get_run(champ.run_id)
        ours = run.data.tags.get(TEST_SET_TAG)
        same_data = ours is not None and champ_run.data.tags.get(TEST_SET_TAG) == ours
        if same_data and key in champ_run.data.metrics:
            champ_value = champ_run.data.metrics[key]
        elif rescore is not None:
            champ_value, rescored = float(rescore(champ.run_id, metric)), True
        if champ_value is None or not math.isfinite(champ_value):
            alias, reason = (
                CHAMPION,
                f"champion v{champ.version} has no comparable {metric} (different test data, not re-scored)",
            )
        else:
            margin = cfg.promote.min_improvement
            better = _beats(candidate, champ_value, higher, margin)
            alias = CHAMPION if better else CHALLENGER
            reason = (
                f"{metric} {candidate:.6g} {'beats' if better else 'does not beat'} champion v{champ.version} "
                f"{champ_value:.6g} by more than {margin:g}"
                + (" (champion re-scored on this test set)" if rescored else "")
            )
    c.set_registered_model_alias(name, alias, mv.version)
    decision = Decision(
        name,
        str(mv.version),
        alias,
        metric,
        higher,
        candidate,
        champ_value,
        str(champ.version) if champ else None,
        rescored,
        reason,
        best_baseline,
        baseline_value,
    )
    tracking.set_tags(
        t,
        run_id,
        {"promote.model": name, "promote.version": decision.version, "promote.alias": alias, "promote.reason": reason},
    )
    c.set_model_version_tag(name, mv.version, "promote.reason", reason)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "decision.json"
        path.write_text(json.dumps(asdict(decision), indent=2) + "\n")
        tracking.log_artifact(t, run_id, path, "promote")
    log.info("%s v%s -> @%s: %s", name, decision.version, alias, reason)
    return decision


def _beats(candidate: float, other: float, higher: bool, margin: float) -> bool:
    return candidate > other + margin if higher else candidate < other - margin


def _against_baselines(
    metrics: dict[str, float], metric: str, candidate: float, higher: bool, margin: float
) -> tuple[str | None, float | None, str | None]:
    """(best baseline, its value, why the candidate may not be champion or None). The baselines
    are the run's own `baseline/<method>/<metric>`: scored on the same test pairs."""
    scores = {
        k.split("/")[1]: v
        for k, v in metrics.items()
        if k.startswith("baseline/") and k.count("/") == 2 and k.endswith(f"/{metric}") and math.isfinite(v)
    }
    if not scores:
        return (
            None,
            None,
            (
                f"no classical baseline was scored on {metric} in this run (evaluate.baselines), and "
                f"promote.require_beat_baselines is true"
            ),
        )
    best = (max if higher else min)(scores, key=scores.__getitem__)
    value = scores[best]
    if _beats(candidate, value, higher, margin):
        return best, value, None
    return (
        best,
        value,
        (
            f"{metric} {candidate:.6g} does not beat the best classical baseline {best} {value:.6g} on "
            f"the same test data (promote.require_beat_baselines)"
        ),
    )


def _recorded(t: tracking.TrackingTarget, run_id: str) -> Decision:
    return Decision(**json.loads(tracking.read_text(t, f"runs:/{run_id}/promote/decision.json")))
