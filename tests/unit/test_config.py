"""Configuration: one source of truth, typos fail loudly and name the key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fusion.config import load_config, parse_overrides
from fusion.errors import ConfigError
from tests.conftest import REPO


@pytest.fixture
def ws(tmp_path):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_profiles_override_train_and_keep_data(ws):
    base, smoke = load_config(ws), load_config(ws, "smoke")
    assert smoke.profile == "smoke" and base.profile == "default"
    assert smoke.train.epochs < base.train.epochs
    assert smoke.data == base.data  # data version never depends on the profile
    assert base.train.options["lambda_l1"] == 0.2 and base.train.lr == 1e-4  # the paper's values


def test_overrides_are_parsed_as_yaml(ws):
    cfg = load_config(ws, "tiny", ["train.lr=2e-3", "train.hflip=false", "evaluate.metrics=[EN, SD]"])
    assert cfg.train.lr == 2e-3 and cfg.train.hflip is False and cfg.evaluate.metrics == ["EN", "SD"]


def test_unknown_key_names_the_key(ws):
    with pytest.raises(ConfigError, match=r"train\.leraning_rate: unknown parameter"):
        load_config(ws, overrides=["train.leraning_rate=1"])


def test_out_of_range_value_names_the_key(ws):
    with pytest.raises(ConfigError, match=r"train\.options\.lambda_l1: 1.5 is outside \[0.0, 1.0\]"):
        load_config(ws, overrides=["train.options.lambda_l1=1.5"])
    with pytest.raises(ConfigError, match=r"train\.options\.lambda_l1: expected a number, got 'high'"):
        load_config(ws, overrides=["train.options.lambda_l1=high"])
    with pytest.raises(ConfigError, match=r"train\.options\.loss_crop_border: not an option of ufa"):
        load_config(ws, overrides=["train.options.loss_crop_border=2"])
    with pytest.raises(ConfigError, match=r"train\.lambda_l1: moved to train\.options\.lambda_l1"):
        load_config(ws, overrides=["train.lambda_l1=0.3"])


def test_unknown_variant_lists_valid_ones(ws):
    with pytest.raises(ConfigError, match=r"train\.variant: unknown variant 'UFA2'.*NO-CA"):
        load_config(ws, overrides=["train.variant=UFA2"])


def test_unknown_profile_lists_valid_ones(ws):
    with pytest.raises(ConfigError, match=r"profile 'smok' is not defined.*smoke"):
        load_config(ws, "smok")


def test_data_cannot_be_overridden_from_the_command_line(ws):
    with pytest.raises(ConfigError, match="versioned by DVC"):
        parse_overrides(["data.synth_multifocus.max_side=64"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.lr"])


def test_bad_blur_interval_in_params_file(ws):
    text = (ws / "params.yaml").read_text().replace("[[2, 3], [4, 5], [5, 7], [8, 10]]", "[[5, 3]]")
    (ws / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"data\.synth_multifocus\.blur_intervals.*\[5, 3\]"):
        load_config(ws)


def test_missing_workspace_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="no params.yaml"):
        load_config(tmp_path)


def test_flat_params_for_tracking(ws):
    flat = load_config(ws, "smoke").flat()
    assert flat["train.options.lambda_l1"] == 0.2 and flat["profile"] == "smoke"
    assert "train.ray.max_failures" in flat


def test_nightly_settings_are_validated_and_the_webhook_never_logged(ws):
    secret = "https://hooks.example.org/services/T000/B000/s3cr3t"
    cfg = load_config(ws, "smoke", [f"nightly.notify_webhook={secret}"])
    assert cfg.nightly.notify_webhook == secret  # the flow posts to it ...
    assert cfg.flat()["nightly.notify_webhook"] == "<redacted>"  # ... MLflow params never show it
    assert secret not in str(cfg.loggable())
    assert load_config(ws, "smoke").flat()["nightly.notify_webhook"] is None
    with pytest.raises(ConfigError, match=r"nightly\.cron: .*Invalid cron string.*minute hour day month weekday"):
        load_config(ws, "smoke", ["nightly.cron=0 25 * * *"])
    with pytest.raises(ConfigError, match=r"nightly\.timezone: unknown time zone 'Mars/Olympus'"):
        load_config(ws, "smoke", ["nightly.timezone=Mars/Olympus"])
    with pytest.raises(ConfigError, match=r"nightly\.on_collision: Input should be 'enqueue' or 'cancel_new'"):
        load_config(ws, "smoke", ["nightly.on_collision=queue"])
    with pytest.raises(ConfigError, match=r"promote\.metric: unknown metric 'SSIM_GT'"):
        load_config(ws, "smoke", ["promote.metric=SSIM_GT"])


def test_relative_source_paths_are_relative_to_the_workspace(tmp_path):
    import shutil

    from fusion.config import load_config
    from tests.conftest import REPO

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    cfg = load_config(tmp_path, "tiny", ["train.source.layout=tno", "train.source.path=../data/TNO"])
    assert cfg.train.source.path == str((tmp_path.parent / "data" / "TNO").resolve())
    cfg = load_config(tmp_path, "tiny", ["train.source.layout=tno", "train.source.path=/abs/TNO"])
    assert cfg.train.source.path == "/abs/TNO"


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "..", "x/../../y"])
def test_stage_names_that_would_write_outside_prepared_are_refused(ws, name):
    text = (
        (ws / "params.yaml").read_text().replace("  test_sets: {}", f"  test_sets: {{'{name}': {{source: embedded}}}}")
    )
    (ws / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"data\.test_sets: .* is not a plain name"):
        load_config(ws)


def test_model_options_are_checked_against_the_model(ws):
    cfg = load_config(ws, overrides=["train.released=true", "train.options={fix_spatial_softmax: true}"])
    assert cfg.train.options == {"fix_spatial_softmax": True, "lambda_l1": 0.2}  # + the loss weight's default
    with pytest.raises(
        ConfigError,
        match=r"train\.options\.fix_spatial_softmx: not an option of ufa; valid: \['fix_spatial_softmax', 'lambda_l1', 'luma'\]",
    ):
        load_config(ws, overrides=["train.options={fix_spatial_softmx: true}"])


def test_a_run_recorded_before_the_options_moved_is_read_with_its_settings(ws):
    # config/resolved.json of a run made before train.lambda_l1 became train.options.lambda_l1:
    # `fusion reproduce` and `--resume` read it with today's schema
    from pydantic import ValidationError

    from fusion.config import Config
    from fusion.config.legacy import upgrade

    old = load_config(ws).model_dump(mode="json")
    old["train"]["options"] = {}
    old["train"].update(lambda_l1=0.6, loss_crop_border=None)
    cfg = Config.model_validate(upgrade(old))
    assert cfg.train.options == {"lambda_l1": 0.6}  # UFA-Fuse's; CADNIF's border dropped
    assert "lambda_l1" in old["train"]  # the record itself is left as it was
    with pytest.raises(ValidationError, match=r"lambda_l1"):  # why the upgrade is needed
        Config.model_validate(old)


CRON_EXPRESSIONS = [
    "0 2 * * *",
    "*/5 * * * 1-5",
    "30 3 * * MON-FRI",
    "0 0 L * *",
    "0 0 * * 5#2",
    "@daily",
    "0 25 * * *",
    "61 * * * *",
    "0 0 1 1 * 2030",
    "H 2 * * *",
    "R 2 * * *",
    "0 2 * *",
    "every night",
    "",
]


def test_nightly_cron_follows_prefects_rule_without_importing_prefect(tmp_path):
    """The cron check runs Prefect's own parser read from its file (`import prefect` would cost
    every command that loads params.yaml two seconds): it accepts and refuses exactly what
    Prefect's CronSchedule does, and loading the configuration leaves Prefect unimported."""
    code = f"""
import json, sys
from fusion.config import load_config
from fusion.config.validation import check_cron

load_config({str(REPO)!r}, "smoke", ["nightly.cron=15 4 * * 1-5"])
ours = {{}}
for expression in {CRON_EXPRESSIONS!r}:
    try:
        check_cron(expression)
        ours[expression] = None
    except ValueError as exc:
        ours[expression] = str(exc).split("; expected")[0]
imported = sorted(m for m in sys.modules if m.split(".")[0] == "prefect")

from pydantic import ValidationError
from prefect.client.schemas.schedules import CronSchedule

prefects = {{}}
for expression in ours:
    try:
        CronSchedule(cron=expression)
        prefects[expression] = None
    except ValidationError as exc:
        prefects[expression] = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
print(json.dumps({{"imported": imported, "ours": ours, "prefects": prefects}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["imported"] == []
    assert result["ours"] == result["prefects"]
    assert sum(reason is None for reason in result["ours"].values()) == 6  # both kinds are in the list
