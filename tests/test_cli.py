"""The command line as a thin layer: help for every option, presets listed, results printed once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from g2lstm import cli
from g2lstm.lm.config import PRESET_DIR, LMConfig
from g2lstm.lm.evaluate import CachePointer, cache_pointer
from g2lstm.train import load_config, preset_descriptions


def leaf_parsers(parser: argparse.ArgumentParser, path: str = "g2lstm") -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by its command line (``g2lstm lm train`` ...)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(leaf_parsers(sub, f"{path} {name}"))
    return found or {path: parser}


def test_every_option_of_every_command_has_a_help_line_with_its_default() -> None:
    commands = leaf_parsers(cli.build_parser())
    assert {"g2lstm lm train", "g2lstm mt translate", "g2lstm compress", "g2lstm bench"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            takes_value = action.nargs != 0
            if takes_value and not action.required:
                assert "default" in action.help, f"{name} {action.option_strings[0]}: {action.help!r}"


@pytest.mark.parametrize("command", [["lm", "train"], ["mt", "train"], ["demo"]])
def test_preset_help_lists_each_preset_with_a_one_line_description(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    listed = capsys.readouterr().out.split("presets:\n")[1].splitlines()
    recipe = "mt" if command[0] == "mt" else "lm"
    names = sorted(preset_descriptions(__import__(f"g2lstm.{recipe}.config", fromlist=["x"]).PRESET_DIR))
    assert [line.split()[0] for line in listed if line.strip()] == names
    assert all(len(line.split(None, 1)[1]) > 20 for line in listed if line.strip())


def test_preset_descriptions_are_the_first_sentence_of_each_preset_comment() -> None:
    descriptions = preset_descriptions(PRESET_DIR)
    assert descriptions["tiny"] == (
        "Seconds to minutes on a laptop CPU: for tests and the demo (`make run`), not for comparisons"
    )
    assert descriptions["cpu-reg"].endswith("scaled to its size (results/ptb-seeds/PRESET.md)")


def test_only_rank_0_prints_results(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    cli._print_metrics({"test_ppl": 90.0}, as_json=True)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    cli._print_metrics({"test_ppl": 90.0}, as_json=True)
    assert capsys.readouterr().out == '{"test_ppl": 90.0}\n'


def test_the_cache_pointer_takes_the_checkpoints_settings_and_flags_replace_them() -> None:
    config = load_config(LMConfig, "tiny", {"cache_window": 123, "cache_theta": 0.7, "cache_lambda": 0.3},
                         preset_dir=PRESET_DIR)
    assert cache_pointer(config) == CachePointer(window=123, theta=0.7, lambdah=0.3)
    assert cache_pointer(config, window=5, lambdah=0.5) == CachePointer(window=5, theta=0.7, lambdah=0.5)


def test_lm_eval_passes_only_the_cache_flags_given(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr("g2lstm.lm.evaluate.evaluate_checkpoint",
                        lambda *args, **kwargs: seen.append(kwargs["cache_pointer_options"]) or {})
    cli.main(["lm", "eval", "x.pt"])
    cli.main(["lm", "eval", "x.pt", "--cache-pointer"])
    cli.main(["lm", "eval", "x.pt", "--cache-pointer", "--theta", "2.5"])
    assert seen == [None, {}, {"theta": 2.5}]


def test_a_signature_names_every_setting_a_number_depends_on() -> None:
    from g2lstm.lm.model import AWDLSTM, LanguageModelSpec
    from g2lstm.signature import describe_compression, model_signature

    spec = LanguageModelSpec(vocab_size=10, emb_size=4, hidden_size=4, num_layers=1, gate="sharpened")
    model = AWDLSTM(spec)
    compression = {"layers.0": {"round": 0.2, "clip": 0.4, "rank": None, "gates": ["input", "forget"]}}
    signature = model_signature(model, noise_p=0.2, seed=7, data="/anywhere/ptb", split="test",
                                compression=compression)
    text = str(signature)
    assert text.startswith("g2lstm:0.1.0|gate:sharpened|tau:0.2|p:0.2|eval:tempered|"
                           "comp:round 0.2&clip 0.4(input,forget)|data:ptb|split:test|seed:7|commit:")
    assert signature.as_dict()["text"] == text and signature.as_dict()["seed"] == 7
    assert describe_compression(None) == "none"
    assert describe_compression({"": {"rank": 64, "gates": ["forget"]}}) == "rank 64(forget)"


def test_lm_eval_prints_the_signature_with_the_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"ptb.{split}.txt").write_text("the cat sat on the mat\n" * 30)
    small = ["--set", "emb_size=8", "--set", "hidden_size=8", "--set", "batch_size=2", "--set", "bptt=5",
             "--set", "eval_batch_size=2", "--set", "test_batch_size=2"]
    assert cli.main(["lm", "train", "--preset", "tiny", "--data", str(corpus), "--max-steps", "2", "--quiet",
                     "--out", str(tmp_path / "run"), *small]) == 0
    capsys.readouterr()
    assert cli.main(["lm", "eval", str(tmp_path / "run" / "best.pt"), "--data", str(corpus),
                     "--eval-gate", "hard"]) == 0
    printed = capsys.readouterr().out
    assert "test_ppl" in printed and "signature: g2lstm:0.1.0|gate:g2|tau:0.9|p:0.2|eval:hard|comp:none|" \
        "data:corpus|split:valid,test|seed:141|" in printed


@pytest.mark.parametrize(
    ("options", "overrides"),
    [([], {"max_steps": 300}), (["--full"], {}), (["--max-steps", "5"], {"max_steps": 5}),
     (["--epochs", "1"], {"epochs": 1})],
    ids=["quick", "full", "max-steps", "epochs"],
)
def test_the_demo_is_quick_unless_asked_for_the_full_run(
    options: list[str], overrides: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []

    def stand_in(out, data, preset, given, **kwargs) -> dict:
        seen.append(given)
        return {"figure": "gate_histograms.png"}

    monkeypatch.setattr("g2lstm.lm.demo.run_demo", stand_in)
    monkeypatch.setattr("g2lstm.lm.demo.format_demo_table", lambda results: "")
    assert cli.main(["demo", "--out", "runs/demo", *options]) == 0
    assert seen == [overrides]
    assert ("g2lstm demo --full" in capsys.readouterr().out) == ("--full" not in options)
