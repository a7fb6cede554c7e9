"""The MLflow UI, where the team reads results: a real `mlflow server` on loopback, a small run
logged the way the pipeline logs, and its page opened in headless Chromium, which must show
the metrics, the tags and the fused-image artifact. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = REPO / "test-artifacts"


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (scripts/install-browser.sh installs them as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # this machine's network is closed: no background calls, no first-run or sync traffic
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver, texts: list[str], timeout: float = 60) -> str:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(
            lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts)
        )
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        missing = [t for t in texts if t not in body]
        raise AssertionError(f"the page never showed {missing}; it shows:\n{body[:3000]}") from None
    return driver.find_element(By.TAG_NAME, "body").text


def test_run_page_shows_metrics_tags_and_the_fused_image(mlflow_server, browser, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.create_experiment("fusionflow-ui")
    run = client.create_run(exp, run_name="ufa-UFA-ui-check", tags={"data.version": "3f2a9c", "model": "ufa"})
    run_id = run.info.run_id
    client.log_param(run_id, "train.model", "ufa")
    for step, loss in enumerate((0.52, 0.31, 0.2), 1):
        client.log_metric(run_id, "train/loss", loss, step=step)
    client.log_metric(run_id, "test/SSIM_gt", 0.9617)
    fused = tmp_path / "fused.png"
    cv2.imwrite(str(fused), np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    client.log_artifact(run_id, str(fused), "eval/samples")
    client.set_terminated(run_id)

    SHOTS.mkdir(exist_ok=True)
    browser.get(f"{mlflow_server}/#/experiments/{exp}/runs/{run_id}")
    body = _wait_for_text(browser, ["ufa-UFA-ui-check", "test/SSIM_gt", "train/loss", "data.version", "3f2a9c"])
    assert "0.9617" in body or "0.962" in body
    browser.save_screenshot(str(SHOTS / "mlflow-run-overview.png"))
    browser.get(f"{mlflow_server}/#/experiments/{exp}/runs/{run_id}/artifacts/eval/samples/fused.png")
    _wait_for_text(browser, ["eval", "fused.png"])
    # the artifact viewer renders the image itself: an <img> of the artifact's bytes (a blob: URL), 64 x 64
    from selenium.webdriver.support.ui import WebDriverWait

    shown = "return [...document.images].filter(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth === 64 && i.naturalHeight === 64).length"
    try:
        WebDriverWait(browser, 60).until(lambda d: d.execute_script(shown) > 0)
    finally:
        browser.save_screenshot(str(SHOTS / "mlflow-run-artifact.png"))
