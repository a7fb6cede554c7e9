"""The project's MLflow links open the UI's "Model training" view, not the GenAI one (Traces,
Sessions, Judges): a real `mlflow server` and its page in headless Chromium. MLflow 3.17's UI
picks the view from the link's workflowType parameter (else the browser's last choice, GenAI by
default); older 3.x UIs from the experiment's kind tag, which the project sets too."""

from __future__ import annotations

import pytest

from tests.integration.test_mlflow_ui import _wait_for_text, browser  # noqa: F401 - `browser` is a fixture

pytestmark = pytest.mark.integration

GENAI_ONLY = ("Judges", "Sessions", "Prompts & versions")  # side-bar entries of the GenAI view


def test_the_run_link_the_pipeline_prints_opens_the_model_training_view(mlflow_server, browser, tmp_path):  # noqa: F811
    from fusion import tracking
    from fusion.config import load_config
    from tests.conftest import REPO

    t = tracking.TrackingTarget(mlflow_server, "fusionflow", None)
    run_id = tracking.start_run(t, "ufa-UFA-view-check", load_config(REPO, "tiny"), {})
    tracking.log_metrics(t, run_id, {"train/loss": 0.3}, step=1)
    tracking.end_run(t, run_id)
    exp = tracking.client(t).get_experiment(tracking.experiment_id(t))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    url = tracking.run_url(t, run_id)
    assert url.startswith(mlflow_server)
    browser.get(url)
    body = _wait_for_text(browser, ["ufa-UFA-view-check", "Model metrics", "train/loss"])
    shown = [name for name in GENAI_ONLY if name in body]
    assert not shown, f"the run opened in the GenAI view (side bar shows {shown})"
