"""`cider-xc label`: extxyz in, labelled extxyz out; resumption and failures."""
import json
import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from cider_xc import label as lb
from cider_xc.ase import CiderPySCF
from cider_xc.cli import main
from cider_xc.model import CiderFunctional

#: SCF converged tightly, so that labels and direct runs (which start from
#: different guesses) agree to 1e-8 eV
TOL = 1e-11
PYSCF = ["--xc", "PBE", "--basis", "sto-3g", "--grid-level", "2", "--conv-tol", TOL,
         "--progress", "none"]
DIRECT = dict(xc="PBE", basis="sto-3g", grid_level=2, conv_tol=TOL)


def _run(*argv):
    """Exit code of `cider-xc label ...` run in this process."""
    try:
        main(["label", *map(str, argv)])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def _waters(n, seed=0):
    frames = []
    for k in range(n):
        m = molecule("H2O")
        m.rattle(0.03, seed=seed + k)
        m.info["config_type"] = "md"
        m.info["step"] = k
        frames.append(m)
    return frames


def _write(path, frames):
    """Write ``frames``; the positions of the file are rounded (8 decimals), so
    compare labels with calculations on what ``_read`` gives back."""
    ase.io.write(path, frames, format="extxyz")
    return path


def _read(path):
    return ase.io.read(path, index=":")


def _direct(atoms, **kw):
    a = atoms.copy()
    a.calc = CiderPySCF(**kw)
    return a.get_potential_energy(), a.get_forces()


def test_labels_are_the_calculator_results(tmp_path):
    frames = _waters(3)
    frames.append(Atoms("OH", positions=[(0, 0, 0), (0.05, 0.02, 0.97)]))   # open shell
    inp = _write(tmp_path / "md.extxyz", frames)
    frames = _read(inp)
    out = tmp_path / "labelled.extxyz"
    assert _run(inp, "-o", out, *PYSCF) == 0
    got = ase.io.read(out, index=":")
    assert len(got) == 4
    calc = CiderPySCF(**DIRECT)   # one calculator along the frames, as label uses it
    for i, (a, b) in enumerate(zip(frames, got)):
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces()
        assert b.info["input_index"] == i
        assert b.get_chemical_symbols() == a.get_chemical_symbols()
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        assert b.get_potential_energy() == pytest.approx(e, abs=1e-8)
        assert b.info["REF_energy"] == b.get_potential_energy()
        np.testing.assert_allclose(b.get_forces(), f, atol=1e-7)      # %16.8f in the file
        np.testing.assert_array_equal(b.arrays["REF_forces"], b.get_forces())
        assert "REF_stress" not in b.info and "stress" not in b.calc.results
    # the input's own info is kept
    assert got[1].info["config_type"] == "md" and got[1].info["step"] == 1
    state = json.loads((tmp_path / "labelled.extxyz.state.json").read_text())
    assert sorted(map(int, state["frames"])) == [0, 1, 2, 3] and state["failed"] == {}
    assert state["output_bytes"] == os.path.getsize(out)


def test_default_functional_is_cider_with_forces(tmp_path):
    """The default xc is the shipped CIDER functional, forces included."""
    inp = _write(tmp_path / "md.extxyz", _waters(2))
    frames = _read(inp)
    out = tmp_path / "cider.extxyz"
    assert _run(inp, "-o", out, "--basis", "sto-3g", "--grid-level", "2",
                "--conv-tol", TOL, "--progress", "none") == 0
    got = ase.io.read(out, index=":")
    calc = CiderPySCF(basis="sto-3g", grid_level=2, conv_tol=TOL)
    for a, b in zip(frames, got):
        a.calc = calc
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-7)
    assert isinstance(calc.xc, CiderFunctional)
    state = json.loads((tmp_path / "cider.extxyz.state.json").read_text())
    assert state["settings"]["xc_resolved"].startswith("0.25*CIDER_X[cider-pbe0]")
    assert state["settings"]["xc_checksum"].startswith("sha256:")
    assert state["settings"]["grid_response"] is True


def test_energy_only(tmp_path):
    inp = _write(tmp_path / "md.extxyz", _waters(1))
    out = tmp_path / "e.extxyz"
    assert _run(inp, "-o", out, *PYSCF, "--energy-only") == 0
    b = ase.io.read(out)
    e, _ = _direct(_read(inp)[0], **DIRECT)
    assert b.get_potential_energy() == pytest.approx(e, abs=1e-8)
    assert "forces" not in b.calc.results and "REF_forces" not in b.arrays


def _si(seed=0):
    si = bulk("Si", "diamond", 5.43)
    si.rattle(0.03, seed=seed)
    return si


def test_gpaw_path_for_periodic_cells_and_auto_code(tmp_path):
    """A periodic cell goes to GPAW (plane waves), a molecule in the same file to
    PySCF; the cell gets the stress and the virial."""
    from gpaw import GPAW, PW
    inp = _write(tmp_path / "mixed.extxyz", [_si(), _waters(1)[0]])
    si, water = _read(inp)
    out = tmp_path / "mixed-out.extxyz"
    assert _run(inp, "-o", out, "--xc", "PBE", "--ecut", "150", "--kpts", 1, 1, 1,
                "--basis", "sto-3g", "--grid-level", "2", "--conv-tol", TOL,
                "--progress", "none") == 0
    got = ase.io.read(out, index=":")
    ref = si.copy()
    ref.calc = GPAW(mode=PW(150), xc="PBE", kpts=(1, 1, 1), txt=None, legacy_gpaw=True)
    e_extrapolated = ref.get_potential_energy()
    free = ref.calc.get_property("free_energy", ref)
    b = got[0]
    assert b.get_potential_energy() == pytest.approx(free, abs=1e-8)
    assert abs(free - e_extrapolated) > 1e-4       # the free energy, not the sigma->0 one
    np.testing.assert_allclose(b.get_forces(), ref.get_forces(), atol=1e-7)
    stress = ref.get_stress()
    np.testing.assert_allclose(b.get_stress(), stress, atol=1e-8)
    np.testing.assert_allclose(b.info["REF_stress"], stress, rtol=1e-12)
    np.testing.assert_allclose(b.info["REF_virials"], -stress * si.get_volume(), rtol=1e-12)
    assert np.abs(stress).max() > 1e-3 and np.abs(b.get_forces()).max() > 1e-2
    assert b.pbc.all() and np.allclose(b.cell, si.cell)
    e, f = _direct(water, **DIRECT)
    assert got[1].get_potential_energy() == pytest.approx(e, abs=1e-8)
    assert json.loads((tmp_path / "mixed-out.extxyz.state.json").read_text())[
        "failed"] == {}


def test_gpaw_with_the_default_cider_functional(tmp_path):
    """--xc means the same for both codes: the default is CIDER, which GPAW
    gets as cider_xc.gpaw.CiderXC (energy, forces and stress)."""
    from gpaw import GPAW, PW
    from cider_xc.gpaw import CiderXC
    inp = _write(tmp_path / "si.extxyz", [_si(seed=4)])
    si = _read(inp)[0]
    out = tmp_path / "si-cider.extxyz"
    assert _run(inp, "-o", out, "--ecut", "150", "--kpts", 1, 1, 1, "--progress", "none") == 0
    ref = si.copy()
    ref.calc = GPAW(mode=PW(150), xc=CiderXC(), kpts=(1, 1, 1), txt=None, legacy_gpaw=True)
    ref.get_potential_energy()
    assert isinstance(ref.calc.hamiltonian.xc, CiderXC)
    got = ase.io.read(out)
    assert got.get_potential_energy() == pytest.approx(
        ref.calc.get_property("free_energy", ref), abs=1e-8)
    np.testing.assert_allclose(got.get_forces(), ref.get_forces(), atol=1e-7)
    np.testing.assert_allclose(got.info["REF_stress"], ref.get_stress(), rtol=1e-12)
    assert np.abs(got.get_forces()).max() > 1e-2


class _Interrupt:
    """Labeller.compute that raises KeyboardInterrupt at one input index and
    records what it computes."""

    def __init__(self, monkeypatch, at=None):
        self.calls = []
        self.at = at
        orig = lb.Labeller.compute
        me = self

        def compute(lab, atoms, code):
            idx = next(i for i, a in enumerate(me.frames) if a == atoms)
            if idx == me.at:
                raise KeyboardInterrupt
            me.calls.append(idx)
            return orig(lab, atoms, code)
        monkeypatch.setattr(lb.Labeller, "compute", compute)


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    inp = _write(tmp_path / "md.extxyz", _waters(5))
    frames = _read(inp)
    out = tmp_path / "out.extxyz"
    settings = lb.LabelSettings(xc="PBE", basis="sto-3g", grid_level=2, conv_tol=TOL)
    spy = _Interrupt(monkeypatch, at=2)
    spy.frames = frames
    with pytest.raises(KeyboardInterrupt):
        lb.label(inp, out, settings, progress="none")
    assert spy.calls == [0, 1]
    assert [a.info["input_index"] for a in ase.io.read(out, ":")] == [0, 1]
    spy.at, spy.calls = None, []
    report = lb.label(inp, out, settings, progress="none")
    assert spy.calls == [2, 3, 4] and report.computed == [2, 3, 4] and report.skipped == 2
    got = ase.io.read(out, ":")
    assert [a.info["input_index"] for a in got] == [0, 1, 2, 3, 4]
    for a, b in zip(frames, got):
        e, _ = _direct(a, **DIRECT)
        assert b.get_potential_energy() == pytest.approx(e, abs=1e-8)
    # a third run has nothing to do
    spy.calls = []
    report = lb.label(inp, out, settings, progress="none")
    assert spy.calls == [] and report.computed == [] and len(report.done) == 5


def test_killed_process_resumes_and_drops_a_half_written_frame(tmp_path):
    """SIGKILL a real `cider-xc label` mid-run, leave half a frame at the end of
    the output (as a kill during the write would), and rerun: every structure
    appears once, in input order, and the finished ones are not recomputed."""
    n = 10
    inp = _write(tmp_path / "md.extxyz", _waters(n, seed=10))
    out = tmp_path / "out.extxyz"
    state_path = tmp_path / "out.extxyz.state.json"
    args = [sys.executable, "-m", "cider_xc.cli", "label", str(inp), "-o", str(out),
            "--xc", "PBE", "--basis", "def2-svp", "--grid-level", "3", "--progress", "log"]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ndone, t0 = 0, time.time()
    while time.time() - t0 < 120:
        if state_path.exists():
            try:
                ndone = len(json.loads(state_path.read_text())["frames"])
            except (ValueError, KeyError):
                ndone = 0
        if ndone >= 2 or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(json.loads(state_path.read_text())["frames"])
    assert 2 <= done_before < n, "the run finished before it could be killed"
    with open(out, "ab") as fh:                      # half a frame, never recorded
        fh.write(b"3\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc=\"F F F\"\nO 0.0 0.")
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"({n - done_before} in this run, {done_before} from before)" in res.stdout
    assert "ETA" in res.stderr                       # log-line progress
    got = ase.io.read(out, ":")
    assert [a.info["input_index"] for a in got] == list(range(n))


def test_failures_are_recorded_reported_and_retried(tmp_path, monkeypatch, capsys):
    frames = _waters(4)
    bad = frames[1]
    bad.positions[2] = bad.positions[1] + (0.05, 0, 0)          # overlapping H atoms
    inp = _write(tmp_path / "md.extxyz", frames)
    out = tmp_path / "out.extxyz"
    orig = lb.Labeller.compute

    def flaky(lab, atoms, code):
        if atoms.info.get("step") == 2:
            raise RuntimeError("transient trouble on structure two")
        return orig(lab, atoms, code)
    monkeypatch.setattr(lb.Labeller, "compute", flaky)
    assert _run(inp, "-o", out, *PYSCF) == 1                    # nonzero: failures
    text = capsys.readouterr().out
    assert "2/4 structures labelled" in text and "2 FAILED" in text
    assert "structure 1 (H2O, pyscf): BadGeometryError: atom 1 (H) is 0.050 Angstrom" in text
    assert "structure 2 (H2O, pyscf): RuntimeError: transient trouble" in text
    state = json.loads((tmp_path / "out.extxyz.state.json").read_text())
    assert set(state["failed"]) == {"1", "2"}
    assert state["failed"]["2"]["type"] == "RuntimeError"
    assert "Traceback" in state["failed"]["2"]["traceback"]
    assert [a.info["input_index"] for a in ase.io.read(out, ":")] == [0, 3]
    # a plain rerun leaves failures alone
    assert _run(inp, "-o", out, *PYSCF) == 1
    assert "(0 in this run, 2 from before)" in capsys.readouterr().out
    # --retry-failed: structure 2 now works, 1 is still a bad geometry
    monkeypatch.setattr(lb.Labeller, "compute", orig)
    assert _run(inp, "-o", out, *PYSCF, "--retry-failed") == 1
    text = capsys.readouterr().out
    assert "3/4 structures labelled (1 in this run, 2 from before)" in text
    assert "moved back into input order" in text and "1 FAILED" in text
    got = ase.io.read(out, ":")
    assert [a.info["input_index"] for a in got] == [0, 2, 3]
    e, _ = _direct(_read(inp)[2], **DIRECT)
    assert got[1].get_potential_energy() == pytest.approx(e, abs=1e-8)
    state = json.loads((tmp_path / "out.extxyz.state.json").read_text())
    assert set(state["failed"]) == {"1"} and state["output_bytes"] == os.path.getsize(out)


def test_unconverged_scf_is_a_recorded_failure(tmp_path):
    inp = _write(tmp_path / "md.extxyz", _waters(2))
    out = tmp_path / "out.extxyz"
    report = lb.label(inp, out, lb.LabelSettings(xc="PBE", basis="sto-3g", grid_level=1,
                                                 max_cycle=1), progress="none")
    # the ADIIS fallback gets 150 cycles, so force a failure through conv_tol instead
    assert report.ok
    inp = _write(tmp_path / "one.extxyz", _waters(1))
    out2 = tmp_path / "out2.extxyz"
    settings = lb.LabelSettings(xc="PBE", basis="sto-3g", grid_level=1, conv_tol=1e-30,
                                max_cycle=3)
    report = lb.label(inp, out2, settings, progress="none")
    assert report.done == [] and set(report.failed) == {0}
    assert report.failed[0]["type"] == "SCFNotConvergedError"
    assert "did not converge for H2O" in report.failed[0]["message"]
    assert "0/1 structures labelled" in lb.summary(report)


def test_settings_must_match_to_resume(tmp_path, capsys):
    inp = _write(tmp_path / "md.extxyz", _waters(2))
    out = tmp_path / "out.extxyz"
    assert _run(inp, "-o", out, *PYSCF) == 0
    capsys.readouterr()
    assert _run(inp, "-o", out, *PYSCF[:3], "6-31g", *PYSCF[4:]) == 2
    err = capsys.readouterr().err
    assert "other settings (basis: 'sto-3g' then, '6-31g' now)" in err
    assert "--overwrite" in err
    # solver effort may change
    assert _run(inp, "-o", out, *PYSCF, "--max-cycle", "200") == 0
    assert "(0 in this run, 2 from before)" in capsys.readouterr().out
    # --overwrite starts again with the new settings
    assert _run(inp, "-o", out, *PYSCF[:3], "6-31g", *PYSCF[4:], "--overwrite") == 0
    assert "(2 in this run, 0 from before)" in capsys.readouterr().out
    assert len(ase.io.read(out, ":")) == 2


def test_input_that_grew_is_continued_and_one_that_changed_is_refused(tmp_path, capsys):
    frames = _waters(3)
    inp = tmp_path / "md.extxyz"
    _write(inp, frames[:2])
    out = tmp_path / "out.extxyz"
    assert _run(inp, "-o", out, *PYSCF) == 0
    ase.io.write(inp, frames[2], format="extxyz", append=True)    # the MD went on
    capsys.readouterr()
    assert _run(inp, "-o", out, *PYSCF) == 0
    assert "3/3 structures labelled (1 in this run, 2 from before)" in capsys.readouterr().out
    assert [a.info["input_index"] for a in ase.io.read(out, ":")] == [0, 1, 2]
    frames[0].positions[0, 0] += 0.1
    _write(inp, frames)
    assert _run(inp, "-o", out, *PYSCF) == 2
    err = capsys.readouterr().err
    assert "the input" in err and "changed since" in err


def test_bad_inputs_have_clear_errors(tmp_path, capsys):
    out = tmp_path / "out.extxyz"
    assert _run(tmp_path / "missing.extxyz", "-o", out, *PYSCF) == 2
    assert "no such input file" in capsys.readouterr().err
    junk = tmp_path / "junk.extxyz"
    junk.write_text("this is not\nan xyz file at all\n")
    assert _run(junk, "-o", out, *PYSCF) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "junk.extxyz as extended XYZ" in err
    traj = tmp_path / "water.traj"
    ase.io.write(traj, molecule("H2O"))
    assert _run(traj, "-o", out, *PYSCF) == 2
    assert "as extended XYZ" in capsys.readouterr().err
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert _run(empty, "-o", out, *PYSCF) == 2
    assert "is empty" in capsys.readouterr().err
    cell = _write(tmp_path / "si.extxyz", [_si()])
    assert _run(cell, "-o", out, *PYSCF, "--code", "pyscf") == 2
    err = capsys.readouterr().err
    assert "--code pyscf handles molecules only" in err and "structures 0" in err
    assert _run(cell, "-o", out, *PYSCF) == 2
    assert "need k-points" in capsys.readouterr().err
    water = _write(tmp_path / "w.extxyz", _waters(1))
    assert _run(water, "-o", out, "--xc", "NOT_A_FUNCTIONAL", "--progress", "none") == 2
    assert "unknown functional 'NOT_A_FUNCTIONAL'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:                       # argparse
        main(["label", str(water), "-o", str(out), "--code", "vasp"])
    assert e.value.code == 2
    assert "invalid choice: 'vasp'" in capsys.readouterr().err
    out.write_text("precious\n")
    assert _run(water, "-o", out, *PYSCF) == 2
    assert "exists and has no state file" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert _run(water, "-o", water, *PYSCF) == 2
    assert "must not be the input" in capsys.readouterr().err


def test_molecule_forced_into_gpaw_needs_a_cell(tmp_path):
    inp = _write(tmp_path / "w.extxyz", _waters(1))
    report = lb.label(inp, tmp_path / "o.extxyz",
                      lb.LabelSettings(code="gpaw", xc="PBE", kpts=(1, 1, 1), ecut=150),
                      progress="none")
    assert report.failed[0]["type"] == "BadGeometryError"
    assert "GPAW needs a unit cell" in report.failed[0]["message"]


def test_a_second_run_on_the_same_output_is_refused_while_one_runs(tmp_path):
    import fcntl
    inp = _write(tmp_path / "w.extxyz", _waters(2))
    out = tmp_path / "o.extxyz"
    settings = lb.LabelSettings(xc="PBE", basis="sto-3g", grid_level=1)
    assert lb.label(inp, out, settings, progress="none").ok
    before = out.read_bytes()
    with open(out, "ab") as held:                     # what a running label holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(lb.LabelError, match="another cider-xc label run is writing"):
            lb.label(inp, out, settings, progress="none")
    assert out.read_bytes() == before
    assert lb.label(inp, out, settings, progress="none").skipped == 2
