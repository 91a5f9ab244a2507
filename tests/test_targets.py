"""``select_modules`` / ``validate_patterns``: matching rules and every error message."""

from __future__ import annotations

import doctest
import re

import pytest
from torch import nn

from lit_opt.targets import select_modules, validate_patterns
from tests.helpers.models import BoringClassifier, TinyMLP, tiny_bert


def _nested() -> nn.Module:
    model = nn.Module()
    model.encoder = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv1d(2, 2, 1))
    model.decoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.classifier = nn.Linear(4, 2)
    return model


# --- selection -------------------------------------------------------------------------------


def test_default_selects_every_submodule_but_root_in_order() -> None:
    model = _nested()
    expected = [name for name, _ in model.named_modules() if name]
    assert list(select_modules(model)) == expected


def test_returns_the_module_objects() -> None:
    model = TinyMLP()
    selected = select_modules(model, ["fc*"])
    assert selected == {"fc1": model.fc1, "fc2": model.fc2}


def test_types_filter() -> None:
    selected = select_modules(_nested(), types=(nn.Linear,))
    assert list(selected) == ["encoder.0", "decoder.0", "classifier"]


def test_several_types() -> None:
    selected = select_modules(_nested(), ["encoder.*"], types=(nn.Linear, nn.Conv1d))
    assert list(selected) == ["encoder.0", "encoder.2"]


def test_union_of_targets_keeps_model_order() -> None:
    selected = select_modules(_nested(), ["classifier", "encoder.0"])
    assert list(selected) == ["encoder.0", "classifier"]


def test_exclude_after_targets() -> None:
    selected = select_modules(_nested(), ["*"], exclude=["classifier*", "decoder.*"], types=(nn.Linear,))
    assert list(selected) == ["encoder.0"]


def test_match_is_case_sensitive_and_whole_name() -> None:
    model = _nested()
    assert list(select_modules(model, ["encoder"])) == ["encoder"]
    with pytest.raises(ValueError, match="matched no module"):
        select_modules(model, ["Encoder"])
    with pytest.raises(ValueError, match="matched no module"):
        select_modules(model, ["encod"])


def test_character_class_patterns() -> None:
    selected = select_modules(_nested(), ["encoder.[02]"])
    assert list(selected) == ["encoder.0", "encoder.2"]


def test_tuple_and_list_accepted() -> None:
    model = _nested()
    assert select_modules(model, ("classifier",)) == select_modules(model, ["classifier"])


def test_lightning_module_names_are_prefixed() -> None:
    selected = select_modules(BoringClassifier(net="mlp"), ["net.fc*"], types=(nn.Linear,))
    assert list(selected) == ["net.fc1", "net.fc2"]


def test_hf_bert_patterns() -> None:
    model = tiny_bert()
    selected = select_modules(
        model, ["*.attention.self.*", "*.intermediate.dense"], exclude=["*.layer.1.*"], types=(nn.Linear,)
    )
    assert list(selected) == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.self.key",
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.0.intermediate.dense",
    ]


# --- validate_patterns -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [["a", "b.*"], ("a", "b.*"), []])
def test_validate_patterns_returns_list(value: object) -> None:
    out = validate_patterns(value, "targets")
    assert out == list(value)  # type: ignore[call-overload]
    assert isinstance(out, list)


def test_validate_patterns_bare_string() -> None:
    msg = "targets='encoder.*' must be a list of fnmatch patterns, not a string. HINT: write targets=['encoder.*']"
    with pytest.raises(ValueError, match=re.escape(msg)):
        validate_patterns("encoder.*", "targets")


@pytest.mark.parametrize("value", [None, 3, {"a": 1}, {"a"}])
def test_validate_patterns_not_a_sequence(value: object) -> None:
    with pytest.raises(
        ValueError, match=r"exclude=.* must be a list or tuple of fnmatch pattern strings, got"
    ):
        validate_patterns(value, "exclude")


def test_validate_patterns_non_string_item() -> None:
    with pytest.raises(
        ValueError, match=r"targets=\['a', 3\] must hold only strings; 3 is a int. HINT: choose"
    ):
        validate_patterns(["a", 3], "targets")


def test_validate_patterns_module_object() -> None:
    with pytest.raises(ValueError, match="not by module object"):
        validate_patterns([nn.Linear(2, 2)], "targets")


def test_validate_patterns_default_argument_name() -> None:
    with pytest.raises(ValueError, match=r"^targets="):
        validate_patterns("x")


# --- select_modules errors -------------------------------------------------------------------


def test_error_bare_string_targets() -> None:
    with pytest.raises(ValueError, match=re.escape("HINT: write targets=['encoder.*']")):
        select_modules(_nested(), "encoder.*")


def test_error_bare_string_exclude() -> None:
    with pytest.raises(ValueError, match=re.escape("HINT: write exclude=['classifier']")):
        select_modules(_nested(), ["*"], exclude="classifier")


def test_error_empty_targets() -> None:
    with pytest.raises(ValueError, match=re.escape("targets=[] selects nothing. HINT: use targets=['*']")):
        select_modules(_nested(), [])


def test_error_names_the_argument() -> None:
    with pytest.raises(ValueError, match=re.escape("layers=[] selects nothing. HINT: use layers=['*']")):
        select_modules(_nested(), [], argument="layers")
    with pytest.raises(ValueError, match=re.escape("layers=['nope'] matched no module")):
        select_modules(_nested(), ["nope"], argument="layers")


def test_error_no_match_lists_nearest_names() -> None:
    model = tiny_bert()
    with pytest.raises(ValueError) as info:
        select_modules(
            model, ["*.attention.self.*", "bert.encoder.layer.0.atention.self.qery"], types=(nn.Linear,)
        )
    msg = str(info.value)
    assert msg.startswith("targets=['bert.encoder.layer.0.atention.self.qery'] matched no Linear module; ")
    assert "modules include 'bert.encoder.layer.0.attention.self.query'" in msg
    assert msg.endswith("HINT: patterns are fnmatch over qualified names from model.named_modules()")


def test_error_no_match_falls_back_to_first_names() -> None:
    model = tiny_bert()
    pattern = re.escape(
        "targets=['*.mlp.*'] matched no Linear/Conv1d module; modules include "
        "'bert.encoder.layer.0.attention.self.query', 'bert.encoder.layer.0.attention.self.key', "
    )
    with pytest.raises(ValueError, match=pattern + r".*, \.\.\. HINT: patterns are fnmatch"):
        select_modules(model, ["*.mlp.*"], types=(nn.Linear, nn.Conv1d))


def test_error_no_match_without_types() -> None:
    with pytest.raises(
        ValueError, match=r"targets=\['\*\.mlp\.\*'\] matched no module; modules include 'encoder'"
    ):
        select_modules(_nested(), ["*.mlp.*"])


def test_error_model_without_submodules() -> None:
    with pytest.raises(ValueError, match="matched no module; the model has no submodules"):
        select_modules(nn.Linear(2, 2), ["*"])


def test_error_matches_only_other_types() -> None:
    pattern = re.escape(
        "targets=['decoder.*'] matched 2 module(s) but no Conv1d module; it matched LayerNorm, Linear "
        "(e.g. 'decoder.0'). HINT: Conv1d modules include 'encoder.2'"
    )
    with pytest.raises(ValueError, match=pattern):
        select_modules(_nested(), ["decoder.*"], types=(nn.Conv1d,))


def test_error_model_has_no_module_of_types() -> None:
    with pytest.raises(ValueError, match=re.escape("HINT: the model has no Conv2d modules at all")):
        select_modules(_nested(), ["*"], types=(nn.Conv2d,))


def test_error_exclude_removes_everything() -> None:
    pattern = re.escape(
        "exclude=['*'] removed every Linear module that targets=['encoder.*', 'classifier'] selected "
        "('encoder.0', 'classifier'). HINT: narrow exclude or widen targets"
    )
    with pytest.raises(ValueError, match=pattern):
        select_modules(_nested(), ["encoder.*", "classifier"], exclude=["*"], types=(nn.Linear,))


def test_error_exclude_removes_everything_truncates_names() -> None:
    with pytest.raises(
        ValueError, match=r"removed every module that targets=\['\*'\] selected \(.*, \.\.\.\)"
    ):
        select_modules(tiny_bert(), ["*"], exclude=["*"])


def test_error_non_string_exclude_item() -> None:
    with pytest.raises(ValueError, match=r"exclude=\[None\] must hold only strings"):
        select_modules(_nested(), ["*"], exclude=[None])


def test_every_target_must_match_even_if_others_do() -> None:
    with pytest.raises(ValueError, match=re.escape("targets=['typo'] matched no module")):
        select_modules(_nested(), ["encoder.*", "typo"])


def test_error_no_match_short_list_ends_with_period() -> None:
    pattern = re.escape(
        "targets=['zzz'] matched no module; modules include 'fc1', 'relu', 'fc2'. HINT: patterns are fnmatch"
    )
    with pytest.raises(ValueError, match=pattern):
        select_modules(TinyMLP(), ["zzz"])


def test_docstring_examples_run() -> None:
    import lit_opt.targets

    result = doctest.testmod(lit_opt.targets, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
