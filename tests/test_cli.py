"""The `cider-xc` command: errors, help, version, output paths checked before
the long work of `train`."""
import argparse
import os
import subprocess
import sys

import pytest

import cider_xc
from cider_xc import cli
from cider_xc.cli import main


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "cider_xc.cli", *argv],
                          capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1"))


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cider-xc {cider_xc.__version__}"


def test_scf_missing_file_is_named(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["scf", str(tmp_path / "nofile.xyz")])
    msg = str(e.value.code)
    assert "no such geometry file" in msg and "nofile.xyz" in msg
    assert "Unsupported atom" not in msg
    with pytest.raises(SystemExit, match="is a directory"):
        main(["scf", str(tmp_path)])


def test_errors_are_one_line_unless_debug():
    r = _cli("info", "NO_SUCH_MODEL")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("cider-xc info: error: ") and "NO_SUCH_MODEL" in lines[0]
    for argv in (("info", "NO_SUCH_MODEL", "--debug"), ("--debug", "info", "NO_SUCH_MODEL")):
        r = _cli(*argv)
        assert r.returncode == 1 and "Traceback" in r.stderr and "NO_SUCH_MODEL" in r.stderr
    r = _cli("scf", "nofile.xyz")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]


def _subparsers(parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    raise AssertionError("no subcommands")


def test_every_option_has_help_and_shows_its_default():
    parser = cli.build_parser()
    subs = _subparsers(parser)
    assert set(subs) == set(cli.COMMANDS)
    for name, p in subs.items():
        assert issubclass(p.formatter_class, argparse.ArgumentDefaultsHelpFormatter), name
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help and a.help != argparse.SUPPRESS, (name, a.dest)
    text = subs["scf"].format_help()
    assert "(default: def2-svp)" in text and "(default: 3)" in text
    assert "(default: 1e-09)" in subs["label"].format_help()


# ---------------------------------------------------------------- train paths
CONFIG = """
name = "fake"
output = "{output}"
plots = "{plots}"
[data]
systems = ["atoms:H"]
directory = "ref"
"""


@pytest.fixture
def fake_training(monkeypatch):
    """train's steps replaced by instant fakes; records which ran."""
    from cider_xc.training import fit, plots, reference
    calls = []
    monkeypatch.setattr(reference, "generate",
                        lambda *a, **k: calls.append("generate") or {"H": {"status": "done"}})
    monkeypatch.setattr(reference, "load_dataset", lambda *a, **k: {})
    hooks = {}

    def fake_fit(data, **kw):
        calls.append("fit")
        if "after_fit" in hooks:
            hooks["after_fit"]()
        return cider_xc.load("test-nl"), {"fake": True}
    monkeypatch.setattr(fit, "fit_functional", fake_fit)
    monkeypatch.setattr(fit, "evaluate_exchange", lambda fn, data: {
        "systems": [], "atomization": [], "mae_ex_cider": 0.0, "mae_ex_pbe": 0.0,
        "mae_aex_cider": 0.0, "mae_aex_pbe": 0.0})
    monkeypatch.setattr(plots, "parity_plot", lambda *a, **k: None)
    monkeypatch.setattr(plots, "enhancement_plot", lambda *a, **k: None)
    return calls, hooks


def test_train_creates_missing_output_directories(tmp_path, fake_training):
    calls, _ = fake_training
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(output="new/dir/model.npz", plots="more/plots"))
    main(["train", str(cfg)])
    assert calls == ["generate", "fit"]
    assert cider_xc.read_functional(tmp_path / "new/dir/model.npz").name == "test-nl"
    assert (tmp_path / "more/plots").is_dir()


def test_train_refuses_bad_outputs_before_the_work(tmp_path, fake_training):
    calls, _ = fake_training
    cfg = tmp_path / "c.toml"
    (tmp_path / "model.npz").write_bytes(b"a previous model")
    cfg.write_text(CONFIG.format(output="model.npz", plots="plots"))
    with pytest.raises(SystemExit, match="model.npz exists; pass --overwrite"):
        main(["train", str(cfg)])
    (tmp_path / "blocker").write_text("a file, not a directory")
    cfg.write_text(CONFIG.format(output="blocker/model.npz", plots="plots"))
    with pytest.raises(SystemExit, match="blocker.*cannot create the directory"):
        main(["train", str(cfg)])
    assert calls == []                    # nothing was computed


def test_train_never_loses_a_finished_fit(tmp_path, fake_training, monkeypatch, capsys):
    """The output directory disappears during the fit: the model goes to a
    fallback file, the message names it, the exit code is non-zero."""
    import shutil
    calls, hooks = fake_training
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(output="out/model.npz", plots="plots"))
    hooks["after_fit"] = lambda: shutil.rmtree(tmp_path / "out")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as e:
        main(["train", str(cfg)])
    msg = str(e.value.code)
    assert "could not write the model to" in msg and "out/model.npz" in msg
    rescued = [f for f in os.listdir(work) if f.startswith("cider-xc-rescued-")]
    assert len(rescued) == 1 and rescued[0] in msg
    assert cider_xc.read_functional(work / rescued[0]).name == "test-nl"
    assert rescued[0] in capsys.readouterr().err
