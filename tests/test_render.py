"""Rendering: undefined variables, bad JSON and unknown secrets are errors naming the template and line."""

import json
import shutil
from pathlib import Path

import pytest

from dmp_deploy import desired, validation
from dmp_deploy.config import load_config
from dmp_deploy.errors import RenderError
from dmp_deploy.resources import all_kinds
from filled_config import filled_config_dir

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def templates(tmp_path):
    directory = tmp_path / "task_definitions"
    directory.mkdir()
    shutil.copy(ROOT / "task_definitions" / "_macros.j2", directory / "_macros.j2")
    return directory


def build(directory: Path, env: str = "local"):
    return desired.build(load_config(env), all_kinds(), task_definitions_dir=directory, asl_dir=directory)


def test_undefined_variable_names_template_and_line(templates):
    (templates / "broken.json.j2").write_text('{\n  "family": {{ family | tojson }},\n  "cpu": {{ app.cpu }}\n}\n')
    with pytest.raises(RenderError) as err:
        build(templates)
    # `app` is None for a template that is not an app: line 3 uses it
    assert "broken.json.j2:3" in str(err.value)


def test_strict_undefined_never_renders_an_empty_string(templates):
    (templates / "typo.json.j2").write_text('{\n\n  "family": "{{ famliy }}"\n}\n')
    with pytest.raises(RenderError) as err:
        build(templates)
    assert "typo.json.j2:3" in str(err.value)
    assert "famliy" in str(err.value)


def test_undefined_value_through_tojson_names_template_and_line(templates):
    (templates / "tj.json.j2").write_text('{\n  "family": {{ family | tojson }},\n  "x": {{ nothing | tojson }}\n}\n')
    with pytest.raises(RenderError) as err:
        build(templates)
    assert "tj.json.j2:3" in str(err.value) and "nothing" in str(err.value)


def test_invalid_json_after_rendering_names_template_and_rendered_line(templates):
    (templates / "comma.json.j2").write_text('{\n  "family": {{ family | tojson }}\n  "cpu": "256"\n}\n')
    with pytest.raises(RenderError) as err:
        build(templates)
    message = str(err.value)
    assert "comma.json.j2" in message and "not valid JSON" in message and "rendered line 3" in message


def test_unknown_secret_names_the_line_and_the_config_table(templates):
    (templates / "sec.json.j2").write_text('{\n  "family": {{ family | tojson }},\n'
                                           '  "x": {{ secret("no_such_secret") | tojson }}\n}\n')
    with pytest.raises(RenderError) as err:
        build(templates)
    assert "sec.json.j2:3" in str(err.value)
    assert "'no_such_secret' is not in the config's [secrets] table" in str(err.value)


def test_syntax_error_names_the_line(templates):
    (templates / "syntax.json.j2").write_text('{\n  "family": {{ family | tojson }\n}\n')
    with pytest.raises(RenderError) as err:
        build(templates)
    assert "syntax.json.j2:2" in str(err.value)


def test_botocore_parameter_validation_rejects_a_bad_task_definition(templates):
    (templates / "bad.json.j2").write_text(json.dumps({"family": "x", "containerDefinitions": [{"name": 5}]}))
    state = build(templates)
    with pytest.raises(RenderError) as err:
        validation.check(state)
    assert "task_definitions/bad.json.j2" in str(err.value)
    assert "containerDefinitions[0].name" in str(err.value)


def test_partials_are_not_documents(templates):
    state = build(templates)
    assert state.task_definitions == {}


@pytest.mark.parametrize("env", ["local", "staging", "production"])
def test_shipped_templates_render_and_validate(env, run_cli, tmp_path, monkeypatch):
    filled_config_dir(tmp_path / "config", monkeypatch)  # staging and production's placeholders filled in
    result = run_cli("validate", "--env", env)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"{env}: valid")


def test_compiled_templates_are_cached_but_an_edited_template_renders_anew(tmp_path, monkeypatch):
    import os

    from dmp_deploy import render

    monkeypatch.setenv("DMP_CACHE_DIR", str(tmp_path / "cache"))
    render._environment.cache_clear()
    directory = tmp_path / "templates"
    directory.mkdir()
    template = directory / "doc.json.j2"
    template.write_text('{"value": {{ value | tojson }}}')
    env = render.environment(directory)
    assert render.render_json(env, "doc.json.j2", {"value": 1}, directory) == {"value": 1}
    assert render.environment(directory) is env  # one environment per directory and process
    assert list((tmp_path / "cache" / "jinja").iterdir())  # compiled code kept for the next process

    template.write_text('{"other": {{ value | tojson }}}')
    stat = template.stat()
    os.utime(template, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert render.render_json(render.environment(directory), "doc.json.j2", {"value": 2}, directory) == {"other": 2}
    render._environment.cache_clear()


def test_compiled_templates_go_to_the_user_cache_when_the_checkout_is_read_only(tmp_path, monkeypatch):
    from dmp_deploy import render

    unwritable = tmp_path / "checkout"
    unwritable.write_text("a file: nothing can be made under it, as in a read-only checkout")
    monkeypatch.delenv("DMP_CACHE_DIR", raising=False)
    monkeypatch.setattr(render, "ROOT", unwritable)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    cache = render._bytecode_cache()
    assert cache is not None and cache.directory == str(tmp_path / "user-cache" / "dmp-deploy" / "jinja")

    monkeypatch.setenv("XDG_CACHE_HOME", str(unwritable))  # nowhere writable: compiled in every process
    assert render._bytecode_cache() is None
