"""Settings: read once from the environment, refused when wrong, and all documented in the README.
"""

import dataclasses
import subprocess
import sys

import pytest

from liroo.settings import Settings, SettingsError, documented_settings
from tests.servers import ROOT


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.port == 8080 and s.workers == 2 and s.governor_enabled is True
    assert s.provider_name == "offline" and s.storage_backend == "local" and s.json_logs is False
    assert s.memory_limit_mb is None  # derived by the governor


def test_seed_names_and_derived_choices():
    s = Settings.from_env(
        {
            "MEMORY_LIMIT_MB": "900",
            "GENAI_API_KEY": "k",
            "GCS_BUCKET_NAME": "b",
            "K_SERVICE": "liroo-backend",
            "LIROO_GOVERNOR": "off",
            "PORT": "9000",
        }
    )
    assert s.memory_limit_mb == 900 and s.port == 9000 and s.governor_enabled is False
    assert s.provider_name == "gemini" and s.storage_backend == "gcs" and s.json_logs is True


@pytest.mark.parametrize(
    "env",
    [
        {"PORT": "eighty"},
        {"LIROO_GOVERNOR": "maybe"},
        {"LIROO_IMAGE_FORMAT": "gif"},
        {"LIROO_STORAGE": "s3"},
        {"LIROO_PROVIDER": "openai"},
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert next(iter(env)) in str(info.value)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).port = 1


def test_readme_table_matches_the_settings():
    readme = (ROOT / "README.md").read_text()
    table = subprocess.run(
        [sys.executable, "scripts/settings-table"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert table in readme, (
        "README's settings table is stale: paste the output of scripts/settings-table"
    )
    for env, _, _ in documented_settings():
        assert f"`{env}`" in readme
