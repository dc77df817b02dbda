"""DatasetCatalog / MetadataCatalog behaviour: registration, errors, set-once metadata."""
import numpy as np
import pytest

from sephnet.d2.data.catalog import DatasetCatalog, Metadata, MetadataCatalog


@pytest.fixture
def names():
    """Unique dataset names, unregistered after the test."""
    created = ["_test_catalog_a", "_test_catalog_b"]
    yield created
    for name in created:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def test_register_get_list_remove(names):
    calls = []
    DatasetCatalog.register(names[0], lambda: calls.append(1) or [{"x": 1}])
    assert names[0] in DatasetCatalog.list()
    assert DatasetCatalog.get(names[0]) == [{"x": 1}]
    assert DatasetCatalog.get(names[0]) == [{"x": 1}]
    assert len(calls) == 2  # the function runs on every get
    DatasetCatalog.remove(names[0])
    assert names[0] not in DatasetCatalog.list()


def test_register_twice_is_an_error(names):
    DatasetCatalog.register(names[0], lambda: [])
    with pytest.raises(AssertionError, match=names[0]):
        DatasetCatalog.register(names[0], lambda: [])
    with pytest.raises(ValueError, match="already registered"):
        DatasetCatalog.register(names[0], lambda: [])


def test_register_needs_callable(names):
    with pytest.raises(TypeError, match="callable"):
        DatasetCatalog.register(names[0], [{"x": 1}])


def test_get_unregistered_lists_available_names(names):
    DatasetCatalog.register(names[0], lambda: [])
    with pytest.raises(KeyError) as info:
        DatasetCatalog.get("_no_such_dataset")
    message = str(info.value)
    assert "_no_such_dataset" in message and "not registered" in message
    assert names[0] in message


def test_metadata_singleton_and_set_once(names):
    meta = MetadataCatalog.get(names[0])
    assert MetadataCatalog.get(names[0]) is meta
    assert meta.name == names[0]
    meta.thing_classes = ["a", "b"]
    meta.thing_classes = ["a", "b"]  # same value: fine
    with pytest.raises(AssertionError, match="thing_classes"):
        meta.thing_classes = ["a", "c"]
    with pytest.raises(ValueError, match="different value"):
        meta.set(thing_classes=["x"])
    assert meta.thing_classes == ["a", "b"]


def test_metadata_set_returns_self_and_get_default(names):
    meta = MetadataCatalog.get(names[1]).set(json_file="a.json", evaluator_type="coco")
    assert meta.json_file == "a.json"
    assert meta.get("image_root") is None
    assert meta.get("image_root", "dflt") == "dflt"
    assert meta.as_dict() == {"name": names[1], "json_file": "a.json", "evaluator_type": "coco"}


def test_metadata_missing_attribute_lists_keys(names):
    meta = MetadataCatalog.get(names[0])
    with pytest.raises(AttributeError, match="metadata is empty"):
        meta.thing_classes
    meta.image_root = "/img"
    with pytest.raises(AttributeError) as info:
        meta.thing_classes
    assert "thing_classes" in str(info.value) and "image_root" in str(info.value)


def test_metadata_renamed_keys_redirect(names):
    meta = MetadataCatalog.get(names[0])
    meta.class_names = ["p"]
    assert meta.thing_classes == ["p"]
    assert meta.class_names == ["p"]


def test_metadata_numpy_values_compare_elementwise():
    meta = Metadata(name="_np")
    meta.colors = np.array([1, 2])
    meta.colors = np.array([1, 2])
    with pytest.raises(ValueError):
        meta.colors = np.array([1, 3])


def test_metadata_get_empty_name_is_an_error():
    with pytest.raises(ValueError):
        MetadataCatalog.get("")
