import pytest

from alignbench.connector import CONNECTORS, Connector
from alignbench.errors import AlignBenchError
from alignbench.registry import Registry
from alignbench.task import TASKS


def _builtin_modules(package) -> list[str]:
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def test_builtins_registered_by_exact_name():
    import alignbench.connectors as connectors
    import alignbench.tasks as tasks

    # every module of a built-in package registers its connector or task, under the module's own name
    assert sorted(CONNECTORS.builtins()) == _builtin_modules(connectors) == sorted(CONNECTORS.names())
    assert CONNECTORS.builtins()[:4] == ["mlp", "perceiver", "ovis", "align"]  # the study's four lead the tables
    assert sorted(TASKS.builtins()) == _builtin_modules(tasks) == TASKS.names()
    for name in CONNECTORS.names():
        assert issubclass(CONNECTORS.get(name), Connector)
        assert CONNECTORS.get(name).name == name


@pytest.mark.parametrize("registry,bad", [(CONNECTORS, "alig"), (CONNECTORS, "mlp2x_gelu"), (TASKS, "docvqa_val")])
def test_unknown_name_lists_known_ones(registry, bad):
    with pytest.raises(AlignBenchError) as err:
        registry.get(bad)
    message = str(err.value)
    assert repr(bad) in message
    for known in registry.names():
        assert known in message


def test_no_substring_dispatch():
    with pytest.raises(AlignBenchError):
        CONNECTORS.get("align_v2")


def test_duplicate_registration_rejected():
    reg = Registry("thing", "alignbench.test-none", "alignbench.errors")
    reg.add("a", object())
    with pytest.raises(AlignBenchError, match="registered twice"):
        reg.add("a", object())
