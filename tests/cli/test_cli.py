"""The CLI contract: verbs, shared options, exit code 2 with one line for bad input."""

from __future__ import annotations

import json

import pytest

from napari_sbl.cli.main import VERBS, main

ALL_VERBS = list(VERBS)


def test_the_contract_verbs_exist():
    assert set(ALL_VERBS) == {"demo", "segment", "embed", "cluster", "labels", "train", "infer", "analyze", "batch"}


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_every_verb_has_help_with_shared_options(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--store", "--device", "--log-level", "--no-progress"):
        assert option in text


def test_no_verb_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "VERB" in capsys.readouterr().out


def test_missing_video_is_one_line_without_traceback(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.mp4" in err and "Traceback" not in err


def test_malformed_prompts_exit_2(tmp_path, capsys, flies_video):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 0, "animals": [{"id": 1, "points": [[1, 2]], "labels": [1, 0]}]}]))
    assert main(["segment", str(flies_video), "--prompts", str(prompts), "--store", str(tmp_path / "s.sbl.zarr")]) == 2
    assert "1 points but 2 labels" in capsys.readouterr().err
    prompts.write_text("{not json")
    assert main(["segment", str(flies_video), "--prompts", str(prompts), "--store", str(tmp_path / "s.sbl.zarr")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_bad_option_value_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "x.mp4", "--backend", "magic"])
    assert info.value.code == 2


def test_debug_log_level_shows_traceback(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.mp4"), "--log-level", "DEBUG"]) == 2
    assert "Traceback" in capsys.readouterr().err
