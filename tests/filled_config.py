"""The shipped staging and production configurations with every placeholder filled in, as an operator would.

`config/staging.toml` and `config/production.toml` keep placeholders where only the operator knows the value, and
`validate` refuses them (dmp_deploy/unfilled.py). Tests that need a deployable staging or production use these
copies instead: the shipped files, with each placeholder value replaced by a plausible real one. A placeholder added
to a shipped file without a filling here makes `filled_config_dir` fail, naming it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dmp_deploy import config as config_module
from dmp_deploy import unfilled

ROOT = Path(__file__).resolve().parent.parent

# The quoted placeholder as the shipped files write it -> what an operator would put there.
FILLINGS = {
    '"virus-alerts@example.invalid"': '"dm-virus-alerts@crowncommercial.gov.uk"',
    '"clarification-questions@example.invalid"': '"dm-clarification-questions@crowncommercial.gov.uk"',
    '"<the Mailchimp audience id of the open-framework notification list>"': '"5a1b2c3d4e"',
    '"203.0.113.0/24"': '"81.128.10.0/28,20.26.48.0/29"',
    '"https://opensearch.dmp-staging.invalid:443"': '"https://vpc-dmp-staging-x1y2z3.eu-west-2.es.amazonaws.com:443"',
    '"https://opensearch.dmp-production.invalid:443"':
        '"https://vpc-dmp-production-a1b2c3.eu-west-2.es.amazonaws.com:443"',
}
DEPLOYED = ("staging", "production")


def fill(text: str) -> str:
    for placeholder, value in FILLINGS.items():
        text = text.replace(placeholder, value)
    return text


def filled_config_dir(directory: Path, monkeypatch) -> Path:
    """A copy of config/ in `directory` with staging and production filled in; the loader is pointed at it."""
    shutil.copytree(ROOT / "config", directory)
    for env in DEPLOYED:
        path = directory / f"{env}.toml"
        path.write_text(fill(path.read_text()))
    monkeypatch.setattr(config_module, "CONFIG_DIR", directory)
    for env in DEPLOYED:
        left = unfilled.find(config_module.load_config(env))
        assert not left, f"config/{env}.toml has a placeholder tests/filled_config.py cannot fill: {left}"
    return directory
