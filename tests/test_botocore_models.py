"""The cache of botocore's parsed models (dmp_deploy/botocore_models.py): botocore's answers, read back in later
processes, never another botocore version's, and botocore's own loader whenever the cache cannot be trusted."""

import json
import marshal

import botocore
import botocore.loaders
import pytest

from dmp_deploy import botocore_models
from dmp_deploy.botocore_models import CachingLoader


def botocores_own(service: str, type_name: str):
    """What botocore's loader parses, as plain JSON (OrderedDicts and dicts compare alike through JSON)."""
    return json.loads(json.dumps(botocore.loaders.Loader().load_service_model(service, type_name)))


def files(directory):
    return sorted(p.name for p in (directory / botocore_models.version_key()).iterdir())


@pytest.fixture
def no_parsing(monkeypatch):
    """After this, botocore's loader cannot parse anything: only the cache can answer."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("botocore's loader was asked, not the cache")
    def arm():
        monkeypatch.setattr(botocore.loaders.Loader, "load_service_model", refuse)
        monkeypatch.setattr(botocore.loaders.Loader, "load_data_with_path", refuse)
    return arm


def test_a_later_process_reads_the_parsed_model_instead_of_parsing_it(tmp_path, no_parsing):
    first = CachingLoader(tmp_path)
    model = first.load_service_model("ecs", "service-2")
    assert json.loads(json.dumps(model)) == botocores_own("ecs", "service-2")
    assert first.load_service_model("ecs", "service-2") is model  # one object per process, as botocore's cache
    assert "ecs.service-2.latest.marshal" in files(tmp_path)
    endpoints, path = first.load_data_with_path("endpoints")
    assert first.is_builtin_path(path)

    no_parsing()
    later = CachingLoader(tmp_path)  # a new process's loader
    cached = later.load_service_model("ecs", "service-2")
    assert list(cached["operations"]) == list(model["operations"])  # the order of every dict is kept
    assert cached == json.loads(json.dumps(model))
    cached_endpoints, cached_path = later.load_data_with_path("endpoints")
    assert cached_endpoints == json.loads(json.dumps(endpoints)) and later.is_builtin_path(cached_path)


def test_a_botocore_upgrade_never_reads_the_files_of_the_version_before(tmp_path, monkeypatch):
    CachingLoader(tmp_path).load_service_model("sts", "service-2")
    path = tmp_path / botocore_models.version_key() / "sts.service-2.latest.marshal"
    layout, key, data = marshal.loads(path.read_bytes())
    data["metadata"]["serviceFullName"] = "as the botocore before had it"
    path.write_bytes(marshal.dumps((layout, key, data)))
    # The same version reads the file (this is what the cache is for) ...
    assert CachingLoader(tmp_path).load_service_model("sts", "service-2")["metadata"]["serviceFullName"] == \
        "as the botocore before had it"

    monkeypatch.setattr(botocore, "__version__", "99.0.0")  # ... an upgraded botocore does not
    model = CachingLoader(tmp_path).load_service_model("sts", "service-2")
    assert model["metadata"]["serviceFullName"] == botocores_own("sts", "service-2")["metadata"]["serviceFullName"]
    assert (tmp_path / botocore_models.version_key() / "sts.service-2.latest.marshal").exists()


@pytest.mark.parametrize("damage", [
    lambda blob: b"",  # emptied
    lambda blob: blob[: len(blob) // 2],  # truncated (a write cut short)
    lambda blob: b"not marshal data at all \x00\xff",
    lambda blob: marshal.dumps({"metadata": {}}),  # marshal, but not a cache file
    lambda blob: marshal.dumps((botocore_models.FORMAT + 1,) + marshal.loads(blob)[1:]),  # another layout
    lambda blob: marshal.dumps((botocore_models.FORMAT, ("service", "iam", "service-2", None),
                                marshal.loads(blob)[2])),  # another model's file under this name
])
def test_a_damaged_or_foreign_cache_file_falls_back_to_botocore_and_is_rewritten(tmp_path, damage):
    CachingLoader(tmp_path).load_service_model("sts", "service-2")
    path = tmp_path / botocore_models.version_key() / "sts.service-2.latest.marshal"
    good = path.read_bytes()
    path.write_bytes(damage(good))

    model = CachingLoader(tmp_path).load_service_model("sts", "service-2")
    assert json.loads(json.dumps(model)) == botocores_own("sts", "service-2")
    assert marshal.loads(path.read_bytes()) == marshal.loads(good)  # written again, whole


def test_a_model_that_another_search_path_also_holds_is_never_cached(tmp_path):
    # A customer model (~/.aws/models or $AWS_DATA_PATH) takes precedence in botocore: it is read every time.
    custom = tmp_path / "models"
    own = botocore.loaders.Loader()
    api_version = own.determine_latest_version("sts", "service-2")
    (custom / "sts" / api_version).mkdir(parents=True)
    changed = botocores_own("sts", "service-2")
    changed["metadata"]["serviceFullName"] = "a customer's model"
    (custom / "sts" / api_version / "service-2.json").write_text(json.dumps(changed))

    cache = tmp_path / "cache"
    loader = CachingLoader(cache, extra_search_paths=[str(custom)])
    assert loader.load_service_model("sts", "service-2")["metadata"]["serviceFullName"] == "a customer's model"
    assert loader.load_service_model("ecs", "service-2")  # a bundled-only service is still cached
    assert files(cache) == ["ecs.service-2.latest.marshal"]


def test_without_a_writable_cache_directory_it_is_botocores_loader(tmp_path):
    loader = CachingLoader(None)
    assert json.loads(json.dumps(loader.load_service_model("sts", "service-2"))) == botocores_own("sts", "service-2")
    assert not list(tmp_path.iterdir())


def test_the_seam_and_the_model_readers_share_one_loader(local_aws):
    from dmp_deploy.aws import Aws

    aws = Aws(local_aws.region, endpoint_url=local_aws.endpoint,
              credentials={"aws_access_key_id": "local", "aws_secret_access_key": "local"})
    assert aws._session._session.get_component("data_loader") is botocore_models.shared_loader()
    ecs = aws.client("ecs")
    assert ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members.keys() == \
        botocore_models.service_model("ecs").operation_model("RegisterTaskDefinition").input_shape.members.keys()
