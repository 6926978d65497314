from pathlib import Path

import pytest

from phenexplain.config import Params, SynthParams, load_params, with_overrides
from phenexplain.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_load_and_match_defaults_types():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.synth.assay == "nfkb"
    assert params.synth.height > 0


def test_missing_file_gives_defaults(tmp_path):
    assert load_params(tmp_path / "absent.yaml") == Params()


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("synth:\n  assay: nfkb\n  hieght: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert str(path) in str(exc.value)
    assert "synth.hieght" in str(exc.value)
    assert "unknown key" in str(exc.value)


def test_unknown_section_is_rejected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("sinth:\n  assay: nfkb\n")
    with pytest.raises(ConfigError, match="'sinth'"):
        load_params(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("synth:\n  height: '512'\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert "'synth.height'" in str(exc.value)
    assert "'512'" in str(exc.value)


def test_int_is_accepted_for_float_fields(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("synth:\n  cells_per_mpx: 40\n")
    assert load_params(path).synth.cells_per_mpx == 40.0


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("synth: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_overrides_apply_and_are_validated():
    base = SynthParams()
    assert with_overrides(base, height=128, width=None).height == 128
    assert with_overrides(base) is base
    with pytest.raises(ConfigError, match="'height'"):
        with_overrides(base, height=0)
    with pytest.raises(ConfigError, match="'assay'"):
        with_overrides(base, assay="nope")


def test_champion_rule_is_read_from_the_registry_section(tmp_path):
    params = load_params(REPO / "params.yaml").registry.champion
    assert params.require_validation and params.max_wrong_sign == 0
    path = tmp_path / "params.yaml"
    path.write_text("registry:\n  champion:\n    metric: fid_inception\n    max_disagreeing: 2\n")
    rule = load_params(path).registry.champion
    assert rule.metric == "fid_inception" and rule.max_disagreeing == 2
    assert rule.max_wrong_sign == 0  # the rest keeps the defaults


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("metric: fid", "'registry.champion.metric'"),
        ("max_wrong_sign: -1", "'registry.champion.max_wrong_sign'"),
        ("require_validation: 'yes'", "'registry.champion.require_validation'"),
        ("max_wrong_signs: 0", "unknown key 'registry.champion.max_wrong_signs'"),
    ],
)
def test_a_bad_champion_rule_names_its_key(tmp_path, line, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"registry:\n  champion:\n    {line}\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert message in str(exc.value) and str(path) in str(exc.value)
