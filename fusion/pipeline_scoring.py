"""The main job's evaluate and promote stages: score a trained run and the baselines on its
test data, log what the team looks at, and decide the registry aliases.

fusion.pipeline re-exports these beside the stages before them (prepare, start, train).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fusion import tracking
from fusion.config import Config
from fusion.data.prepared import Prepared

if TYPE_CHECKING:
    from fusion.pipeline import RunInfo

log = logging.getLogger("fusion.pipeline")


def evaluate(cfg: Config, prepared: Prepared, run: RunInfo, ckpt_dir: Path):
    """Score the trained model and the baselines on the test split with every configured
    metric; log the tables, per-pair values, sample images and the comparison figure."""
    from fusion.checkpoint import checkpoint_in, model_from_checkpoint
    from fusion.data.test_sets import load_test_set
    from fusion.device import pick_device
    from fusion.evaluate import baseline_methods, model_method
    from fusion.inference import model_label
    from fusion.models import checkpoint_stage

    device = pick_device(cfg.train.device)
    model, payload = model_from_checkpoint(checkpoint_in(ckpt_dir), device)
    stage = checkpoint_stage(payload)
    if not stage.fuses:
        log.info(
            "%s %s checkpoints do not fuse: nothing to evaluate; train the next stage with train.init_from=runs:/%s",
            model_label(payload, variant=False),
            stage.label or stage.name,
            run.run_id,
        )
        return None
    label = model_label(payload)
    test_set, labels, title = _test_set(cfg, prepared)
    from fusion.promotion import TEST_SET_TAG

    tracking.set_tags(run.target, run.run_id, {TEST_SET_TAG: test_set.version()})
    methods = {label: model_method(model, device), **baseline_methods(cfg.evaluate.baselines)}
    result = _score(cfg, run, methods, label, test_set, labels, title, "eval", "test", device)
    # every registered test set of the same task (data.test_sets): eval/<name>/, test_sets/<name>/<metric>
    for name, folder in _task_test_sets(cfg, run.workspace):
        extra = load_test_set(folder)
        _score(
            cfg,
            run,
            methods,
            label,
            extra,
            extra.source_labels,
            f"{name}: {cfg.train.task} test set",
            f"eval/{name}",
            f"test_sets/{name}",
            device,
        )
    return result


def _score(
    cfg: Config,
    run: RunInfo,
    methods: dict,
    label: str,
    test_set,
    labels,
    title: str,
    artifact_dir: str,
    prefix: str,
    device,
):
    """Score `methods` on `test_set`; reports, figure and samples to the run under `artifact_dir`,
    means as `<prefix>/<metric>` for the model and `baseline/<method>/...` (prefixed) for the rest."""
    from fusion.evaluate import evaluate_methods, run_metrics, save_samples, write_reports
    from fusion.report import evaluation_figure

    result, samples = evaluate_methods(
        test_set,
        methods,
        _applicable(cfg.evaluate.metrics, test_set.has_gt),
        device=device,
        keep_images=cfg.evaluate.grid_pairs,
        warm_up=[label],
    )
    eval_dir = run.dir / artifact_dir
    paths = write_reports(result, eval_dir)
    figure = evaluation_figure(
        samples,
        labels,
        result.methods,
        eval_dir / "grid.png",
        title=title,
        caption_metric=_caption_metric(result),
        rows=result.rows,
    )
    for p in (*paths.values(), figure):
        tracking.log_artifact(run.target, run.run_id, p, artifact_dir)
    sample_dir = eval_dir / "samples"
    save_samples(samples, sample_dir, labels)
    tracking.log_artifacts(run.target, run.run_id, sample_dir, f"{artifact_dir}/samples")
    tracking.log_metrics(run.target, run.run_id, run_metrics(result, label, prefix))
    return result


def _task_test_sets(cfg: Config, workspace: Path) -> list[tuple[str, Path]]:
    """Prepared test sets (data.test_sets) of the run's task, in name order; missing ones are
    skipped with a warning (their stage has not run)."""
    from fusion.data.stages import output_dir

    out = []
    for name in sorted(cfg.data.test_sets):
        folder = output_dir(workspace, "test_sets", name)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            log.warning("test set %s: %s not prepared (run `fusion data prepare`); not evaluated", name, folder)
            continue
        if json.loads(manifest.read_text())["task"] == cfg.train.task:
            out.append((name, folder))
    return out


def _test_set(cfg: Config, prepared: Prepared):
    """The held-out pairs of what the run trained on: the prepared split, or train.source's."""
    from fusion.data.training import load_source_split
    from fusion.evaluate import pairs_test_set, prepared_test_set

    spec = cfg.train.source
    if spec is None:
        test_set = prepared_test_set(prepared.root, "test")
        return test_set, ["near (synthetic)", "far (synthetic)"], f"{test_set.name}: SYNTHETIC multi-focus test pairs"
    _, test = load_source_split(spec, cfg.seed)
    test_set = pairs_test_set(test, f"{spec.layout}:{Path(spec.path).name}/test")
    return test_set, test_set.source_labels, f"{test_set.name}: held-out {cfg.train.task} pairs"


def _applicable(names: list[str], has_gt: bool) -> list[str]:
    """The configured metrics this test set supports: *_gt metrics need a ground truth."""
    from fusion.metrics import ALL, select_metrics

    unusable = select_metrics(names, has_gt).unusable
    return [n for n in names if n == ALL or n not in unusable]


def _caption_metric(result) -> str | None:
    for name in ("SSIM_gt", "Qabf", "SSIM"):
        if name in result.metric_names:
            return name
    return None


def rescore(cfg: Config, prepared: Prepared, target: tracking.TrackingTarget, run_id: str, metric: str) -> float:
    """Mean `metric` of run `run_id`'s model on the test set of `cfg`/`prepared` (a champion
    re-scored on a candidate's test data before the two are compared)."""
    import tempfile

    from fusion.device import pick_device
    from fusion.evaluate import evaluate_methods, model_method
    from fusion.inference import load_model

    device = pick_device(cfg.train.device)
    with tempfile.TemporaryDirectory(prefix="fusionflow-champion-") as tmp:
        local = tracking.download(target.uri, f"runs:/{run_id}/checkpoints", Path(tmp))
        model, _ = load_model(local, device)
    test_set, _, _ = _test_set(cfg, prepared)
    result, _ = evaluate_methods(test_set, {"champion": model_method(model, device)}, [metric], device=device)
    return result.means["champion"][metric]


def promote(cfg: Config, prepared: Prepared, run: RunInfo):
    """Register the run's model; @champion only if it beats the best baseline and the current one (fusion.promotion)."""
    from fusion.promotion import promote as decide

    return decide(
        run.target, run.run_id, cfg, lambda champ_id, metric: rescore(cfg, prepared, run.target, champ_id, metric)
    )
