"""Bad input to the `xlprune` command: non-finite numbers, damaged files in a folder, folders it does not support.

Each case must end with one line on stderr and exit code 2, before any work, leaving every folder as it was. The
options and commands are discovered from the parser itself, so a new option or command is covered without
editing this file.
"""
import argparse
import hashlib
import math
import shutil

import pytest
import torch

from conftest import tiny_config
from test_cli import main_error
from xlprune_lib import validate
from xlprune_lib.cli import build_parser, main
from xlprune_lib.config import UserError
from xlprune_lib.deploy.bench import BenchSpec
from xlprune_lib.loops.specs import IterSpec, PruneSpec
from xlprune_lib.xlnet.modeling import classifier_fields, save_model

NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"]   # 1e999 overflows to inf


def one_line_error(capsys, argv) -> str:
    """``main(argv)`` returns 2 with exactly one stderr line and no traceback (``test_cli.main_error``); the line
    is returned."""
    return main_error(capsys, *argv)


def subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def required_args(parser, values: dict, skip=()) -> list[str]:
    """The command line of every required option of ``parser`` (but ``skip``), with a value from ``values``."""
    argv = []
    for a in parser._actions:
        if a.required and a.option_strings and a.option_strings[0] not in skip:
            assert a.dest in values, f"no test value for the required option {a.option_strings[0]}: add one"
            argv += [a.option_strings[0], values[a.dest]]
    return argv


def number_options():
    """``(command, option)`` for every option that reads a number (its type is not a plain string)."""
    out = []
    for name, p in subcommands().items():
        for a in p._actions:
            if a.option_strings and a.nargs != 0 and a.type not in (None, str):
                out.append((name, a.option_strings[0]))
    return out


def tree(folder) -> dict:
    """Every file under ``folder`` with its hash: what "left as it was" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. numbers: NaN and +-inf are refused by every option and every spec --------------------------------------

def test_the_number_options_are_found():
    found = set(number_options())
    for case in [("prune", "--lambda"), ("prune", "--finetune-epochs"), ("prune", "--sparsity"), ("prune", "--seed"),
                 ("iterate", "--target"), ("iterate", "--step"), ("iterate", "--requirement"), ("iterate", "--ramp"),
                 ("bench", "--batch-sizes"), ("bench", "--seq-len"), ("report", "--seq-len"), ("finetune", "--seed"),
                 ("pretrain", "--seed")]:
        assert case in found


@pytest.mark.parametrize("command, option", number_options())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_number_option_refuses_non_finite(command, option, value, tmp_path, capsys):
    parser = subcommands()[command]
    values = {"model": str(tmp_path / "model"), "baseline": str(tmp_path / "base"), "out": str(tmp_path / "out"),
              "method": "magnitude"}
    argv = [command, *required_args(parser, values, skip=(option,)), f"{option}={value}"]
    line = one_line_error(capsys, argv)
    assert option in line and value in line.lower(), line   # the option and the value, not a later complaint
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", NON_FINITE)
def test_float_spellings(value, tmp_path, capsys):
    line = one_line_error(capsys, ["prune", "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "l0",
                                   f"--lambda={value}"])
    assert "--lambda" in line and "finite" in line


def test_a_new_float_option_is_covered():
    parser = subcommands()["prune"]
    parser.add_argument("--brand-new", type=float)
    with pytest.raises(UserError, match="--brand-new: must be a finite number"):
        parser.parse_args(["--brand-new", "nan", "--model", "m", "--out", "o", "--method", "magnitude"])
    assert parser.parse_args(["--brand-new", "2.5", "--model", "m", "--out", "o", "--method", "magnitude"]).brand_new == 2.5


def spec_cases():
    """``(spec class, keyword arguments that check, field)`` for every number field of every spec."""
    base = {PruneSpec: {"method": "magnitude", "sparsity": 0.5}, IterSpec: {"method": "magnitude"}, BenchSpec: {}}
    out = []
    for cls, kwargs in base.items():
        for f in cls.__dataclass_fields__.values():
            if any(t in str(f.type) for t in ("int", "float")):
                out.append((cls, kwargs, f.name))
    return out


@pytest.mark.parametrize("cls, kwargs, field", spec_cases(), ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_spec_number_refuses_non_finite(cls, kwargs, field, value):
    cls(**kwargs).check()                         # the request is fine as given
    bad = (value,) if field == "batch_sizes" else value
    with pytest.raises(UserError, match="must be a finite number"):
        cls(**{**kwargs, field: bad}).check()


def test_range_checks_refuse_nan_themselves():
    with pytest.raises(UserError, match="--finetune-epochs must be >= 0, got nan"):
        validate.at_least(0, finetune_epochs=math.nan)
    for lam in (math.nan, math.inf):
        with pytest.raises(UserError, match="lambda must be >= 0"):
            validate.lam_or_target(lam, None)
    with pytest.raises(UserError):
        validate.sparsity(math.nan)


# --- 2. damaged files: one line naming the file, nothing changed -----------------------------------------------

@pytest.fixture(scope="module")
def folders(small_tokenizer, tmp_path_factory):
    """A tiny random classifier saved with ``save_model`` with its tokenizer and a ``metrics.json`` (``fast``); the
    same with ``spiece.model`` as its tokenizer (``spiece``); the same without tokenizer files (``no_tokenizer``);
    and foreign folders saved by ``transformers`` itself (BERT, GPT-2, an XLNet language model)."""
    from pathlib import Path

    from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel,
                              XLNetForSequenceClassification, XLNetLMHeadModel)

    root = tmp_path_factory.mktemp("bad-input")
    torch.manual_seed(0)
    tok = small_tokenizer
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                       **classifier_fields(["rotten", "fresh"])))
    fast = save_model(model, tok, root / "fast", extra_files={"metrics.json": {"profile": "smoke"}})
    (fast / "special_tokens_map.json").write_text('{"pad_token": "<pad>", "unk_token": "<unk>"}\n')
    spiece = root / "spiece"
    shutil.copytree(fast, spiece)
    (spiece / "tokenizer.json").unlink()
    shutil.copy(Path(tok.name_or_path) / "spiece.model", spiece / "spiece.model")
    bare = root / "no_tokenizer"
    shutil.copytree(fast, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bare / name).unlink()
    foreign = {"bert": BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                                num_attention_heads=2, intermediate_size=32)),
               "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)),
               "xlnet_lm": XLNetLMHeadModel(tiny_config(vocab_size=len(tok)))}
    out = {"fast": fast, "spiece": spiece, "no_tokenizer": bare}
    for name, m in foreign.items():
        m.save_pretrained(str(root / name))
        tok.save_pretrained(str(root / name))     # a tokenizer too: the model is the only thing wrong
        out[name] = root / name
    return out


def command_line(command, model, tmp, baseline=None):
    """A command line that runs ``command`` on ``model`` (quickly, where it gets that far)."""
    base = str(baseline or model)
    return {"info": ["info", "--model", str(model)],
            "report": ["report", "--model", str(model)],
            "bench": ["bench", "--model", str(model), "--baseline", base, "--repeats", "1", "--warmup", "0",
                      "--batch-sizes", "1", "--seq-len", "8", "--no-memory"],
            "prune": ["prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", "--profile",
                      "smoke", "--quiet", "--out", str(tmp / "out")],
            "iterate": ["iterate", "--model", str(model), "--method", "magnitude", "--profile", "smoke", "--quiet",
                        "--round-steps", "1", "--out", str(tmp / "out")],
            "export": ["export", "--model", str(model), "--profile", "smoke", "--out", str(tmp / "out.onnx")],
            "finetune": ["finetune", "--profile", "smoke", "--init", str(model), "--quiet", "--out",
                         str(tmp / "out")]}[command]


MODEL_FILES = ["config.json", "model.safetensors"]
RUN_FILES = MODEL_FILES + ["metrics.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "spiece.model"]
DAMAGED = ([(c, f) for c in ("info", "report", "bench", "bench-baseline") for f in MODEL_FILES]
           + [(c, f) for c in ("prune", "iterate", "export") for f in RUN_FILES])


def truncate(path, how="truncated"):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) * 2 // 3], "empty": b"",
                      "garbage": b"\x89\x00\xff" * 50}[how])


def copy_damaged(folders, tmp_path, name, how="truncated"):
    src = folders["spiece" if name == "spiece.model" else "fast"]
    folder = tmp_path / "model"
    shutil.copytree(src, folder)
    truncate(folder / name, how)
    return folder


@pytest.mark.parametrize("command, name", DAMAGED)
def test_a_damaged_file_is_named(command, name, folders, tmp_path, capsys):
    folder = copy_damaged(folders, tmp_path, name)
    before = tree(folder)
    if command == "bench-baseline":
        argv = command_line("bench", folders["fast"], tmp_path, baseline=folder)
    else:
        argv = command_line(command, folder, tmp_path)
    line = one_line_error(capsys, argv)
    assert f"{folder / name} is damaged (" in line, line
    assert tree(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("how", ["empty", "garbage"])
@pytest.mark.parametrize("command, name", [("info", "config.json"), ("info", "model.safetensors"),
                                           ("prune", "tokenizer.json"), ("export", "metrics.json")])
def test_other_damage(command, name, how, folders, tmp_path, capsys):
    folder = copy_damaged(folders, tmp_path, name, how)
    line = one_line_error(capsys, command_line(command, folder, tmp_path))
    assert f"{folder / name} is damaged (" in line, line


def iterate_out(folder, tmp_path):
    """An ``iterate`` run folder of ``folder`` as an interrupted run leaves it (``run.json``, two records), with the
    configuration key the command computes, plus ``summary.json`` as a finished run has."""
    from xlprune_lib.config import get_profile, write_json_atomic
    from xlprune_lib.loops.iterative import iterate_config
    from xlprune_lib.train.runs import run_key, source_run

    spec = IterSpec(method="magnitude", round_steps=1).check()
    _, source_key, profile = source_run(folder, get_profile("smoke"))
    key = run_key("iterate", iterate_config(spec, source_key, profile, 0))
    out = tmp_path / "out"
    write_json_atomic(out / "run.json", {"config_key": key})
    (out / "rounds.jsonl").write_text("".join(f'{{"round": {r}, "config_key": "{key}"}}\n' for r in (0, 1)))
    write_json_atomic(out / "summary.json", {"config_key": key, "final": None})
    return out


@pytest.mark.parametrize("name", ["run.json", "rounds.jsonl", "summary.json"])
def test_iterate_resume_names_a_damaged_run_file(name, folders, tmp_path, capsys):
    out = iterate_out(folders["fast"], tmp_path)
    if name != "summary.json":
        (out / "summary.json").unlink()       # an unfinished run: the records are read to resume
    truncate(out / name)
    before = tree(out)
    line = one_line_error(capsys, command_line("iterate", folders["fast"], tmp_path))
    assert f"{out / name} is damaged (" in line, line
    assert tree(out) == before


def test_read_json_refuses_another_type(tmp_path):
    from xlprune_lib.config import read_json

    (tmp_path / "metrics.json").write_text("[1, 2]\n")
    with pytest.raises(UserError, match=r"metrics.json is damaged \(a JSON list where a JSON dict belongs\)"):
        read_json(tmp_path / "metrics.json")


def test_no_json_read_bypasses_the_helper():
    """Every JSON file read in the package goes through ``config.read_json`` / ``read_jsonl`` (one error for a
    damaged file), and every safetensors read through ``modeling.load_tensors`` / ``check_weights``."""
    import re
    from pathlib import Path

    import xlprune_lib

    # reads with their own handling: the helper itself; a memo that cannot be read is recomputed; a results
    # table's provenance and the book's notebooks are the repository's files, refused or rebuilt there; the
    # BERT source weights are checked against their recorded hashes first
    own = {"config.py", "train/runs.py", "book/results.py", "book/build.py", "xlnet/modeling.py", "train/warmstart.py"}
    root = Path(xlprune_lib.__file__).parent
    for path in root.rglob("*.py"):
        text, rel = path.read_text(), str(path.relative_to(root))
        if rel in own:
            continue
        assert not re.search(r"json\.loads?\([^)]*read_text\(", text), rel
        assert not re.search(r"json\.load\(open", text), rel
        assert not re.search(r"\bload_file\(", text), rel


# --- 4. folders the commands do not support --------------------------------------------------------------------

def model_commands():
    """Every command with a model folder option (``--model``, ``--baseline``, ``--init``), from the parser."""
    return [(name, a.option_strings[0]) for name, p in subcommands().items() for a in p._actions
            if a.option_strings and a.option_strings[0] in ("--model", "--baseline", "--init")]


CLASSIFIER_ONLY = ("prune", "iterate", "export")
FOREIGN = {"bert": ("BertForSequenceClassification", "'bert'"), "gpt2": ("GPT2LMHeadModel", "'gpt2'")}


def test_the_model_commands_are_found():
    assert {c for c, _ in model_commands()} >= {"info", "report", "bench", "prune", "iterate", "export", "finetune"}


@pytest.mark.parametrize("command, option", model_commands())
@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_foreign_folder_is_refused_in_one_line(command, option, kind, folders, tmp_path, capsys):
    foreign = folders[kind]
    before = tree(foreign)
    argv = (command_line("bench", folders["fast"], tmp_path, baseline=foreign) if option == "--baseline"
            else command_line(command, foreign, tmp_path))
    line = one_line_error(capsys, argv)
    cls, model_type = FOREIGN[kind]
    assert f"{foreign} holds a {cls} (model type {model_type}); xlprune supports XLNet" in line, line
    assert "XLNetForSequenceClassification" in line and "xlnet-pruned" in line
    assert tree(foreign) == before and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", CLASSIFIER_ONLY)
def test_a_language_model_is_refused_by_classifier_commands(command, folders, tmp_path, capsys):
    line = one_line_error(capsys, command_line(command, folders["xlnet_lm"], tmp_path))
    assert f"{folders['xlnet_lm']} holds an XLNetLMHeadModel (model type 'xlnet')" in line, line
    assert "needs a fine-tuned sequence classifier" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["info", "report"])
def test_a_language_model_is_fine_for_the_others(command, folders, tmp_path, capsys):
    capsys.readouterr()
    assert main(command_line(command, folders["xlnet_lm"], tmp_path)) == 0
    assert "XLNetLMHeadModel" in capsys.readouterr().out


@pytest.mark.parametrize("command", CLASSIFIER_ONLY)
def test_a_folder_without_a_tokenizer_is_refused(command, folders, tmp_path, capsys):
    line = one_line_error(capsys, command_line(command, folders["no_tokenizer"], tmp_path))
    assert f"{folders['no_tokenizer']} has no tokenizer (neither tokenizer.json nor spiece.model)" in line, line
    assert list(tmp_path.iterdir()) == []


def test_the_tokenizer_loader_refuses_a_folder_without_one(folders):
    from xlprune_lib.train.data import load_tokenizer

    with pytest.raises(UserError, match="has no tokenizer"):
        load_tokenizer(folders["no_tokenizer"])
    assert len(load_tokenizer(folders["spiece"])) == len(load_tokenizer(folders["fast"]))
