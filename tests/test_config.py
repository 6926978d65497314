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
