"""GPAW-side items of issue 22: hybrid semilocal parts refused, label over
frames of different symmetry, MTP .cfg output of periodic cells."""
import pytest

pytest.importorskip("gpaw")

from cider_xc.gpaw import parse_semilocal  # noqa: E402


@pytest.mark.parametrize("s", ["0.25*HF + 0.75*GGA_X_PBE, GGA_C_PBE", "HYB_GGA_XC_WB97X",
                               "hyb_gga_xc_pbeh"])
def test_gpaw_refuses_exact_exchange_in_semilocal_part(s):
    """GPAW's LibXC would evaluate only the DFT part of a hybrid libxc name."""
    with pytest.raises(ValueError, match="exact exchange"):
        parse_semilocal(s)


def _si_frames():
    from ase.build import bulk
    si = bulk("Si", "diamond", 5.43)
    a = si.copy()
    a.positions[0] += [0.08, 0.03, 0.0]
    b = si.copy()
    b.positions[0] += [0.10, 0.0375, 0.0]      # same (lower) symmetry as a
    return [si, a, b, si.copy()]


def test_label_frames_of_different_symmetry(tmp_path):
    """An ideal crystal, then displaced frames, then the ideal one again:
    every frame is labelled with its own symmetry, as if run alone (GPAW kept
    the first frame's symmetry and failed with "Broken symmetry!")."""
    import ase.io
    import numpy as np
    from cider_xc import label as lb
    frames = _si_frames()
    inp = tmp_path / "md.extxyz"
    ase.io.write(inp, frames, format="extxyz")
    settings = lb.LabelSettings(xc="PBE", ecut=150, kpts=(2, 2, 2))
    report = lb.label(inp, tmp_path / "out.extxyz", settings, progress="none")
    assert report.failed == {} and report.done == [0, 1, 2, 3]
    out = ase.io.read(tmp_path / "out.extxyz", index=":")
    alone = []
    for at in frames:
        lab = lb.Labeller(settings)
        alone.append(lab.compute(at, "gpaw"))
    for i, (o, ref) in enumerate(zip(out, alone)):
        e = o.get_potential_energy()
        # frames 0, 1, 3 start a fresh calculator: identical to running alone;
        # frame 2 reuses frame 1's (same symmetry): equal to SCF precision
        tol = 1e-3 if i == 2 else 1e-8
        assert abs(e - ref["energy"]) < tol, (i, e, ref["energy"])
        assert np.abs(o.get_forces() - ref["forces"]).max() < (1e-2 if i == 2 else 1e-7)
        assert np.abs(o.get_stress() - ref["stress"]).max() < (1e-3 if i == 2 else 1e-8)
    assert abs(out[0].get_potential_energy() - out[3].get_potential_energy()) < 1e-8


def test_labeller_reuses_calculator_only_for_the_same_symmetry():
    from cider_xc import label as lb
    si, a, b, si2 = _si_frames()
    lab = lb.Labeller(lb.LabelSettings(xc="PBE", ecut=150, kpts=(1, 1, 1),
                                       energy_only=True))
    lab.compute(si, "gpaw")
    first = lab._gpaw
    nsym_ideal = len(first.wfs.kd.symmetry.op_scc)
    lab.compute(a, "gpaw")
    second = lab._gpaw
    assert second is not first and len(second.wfs.kd.symmetry.op_scc) < nsym_ideal
    lab.compute(b, "gpaw")
    assert lab._gpaw is second                      # same symmetry: reused
    lab.compute(si2, "gpaw")
    assert lab._gpaw is not second
    assert len(lab._gpaw.wfs.kd.symmetry.op_scc) == nsym_ideal


# ------------------------------------------------------------- MLIP .cfg output
def read_cfg(path):
    """A small reader of MLIP .cfg files, written from the format description
    (independent of cider_xc.label): a list of dicts with size, cell, ids,
    types, positions, forces, energy, plus_stress and features."""
    import numpy as np
    confs, cur, lines = [], None, open(path).read().splitlines()
    i = 0
    while i < len(lines):
        t = lines[i].strip()
        i += 1
        if not t:
            continue
        if t == "BEGIN_CFG":
            cur = {"features": {}, "cell": None, "forces": None, "plus_stress": None}
        elif t == "END_CFG":
            confs.append(cur)
            cur = None
        elif t == "Size":
            cur["size"] = int(lines[i])
            i += 1
        elif t == "Supercell":
            cur["cell"] = np.array([[float(x) for x in lines[i + k].split()] for k in range(3)])
            i += 3
        elif t.startswith("AtomData:"):
            cols = t.split()[1:]
            rows = np.array([[float(x) for x in lines[i + k].split()]
                             for k in range(cur["size"])])
            i += cur["size"]
            col = {c: rows[:, k] for k, c in enumerate(cols)}
            cur["ids"] = col["id"].astype(int)
            cur["types"] = col["type"].astype(int)
            cur["positions"] = np.stack([col["cartes_x"], col["cartes_y"], col["cartes_z"]], 1)
            if "fx" in col:
                cur["forces"] = np.stack([col["fx"], col["fy"], col["fz"]], 1)
        elif t == "Energy":
            cur["energy"] = float(lines[i])
            i += 1
        elif t.startswith("PlusStress:"):
            names = t.split()[1:]
            vals = [float(x) for x in lines[i].split()]
            i += 1
            cur["plus_stress"] = dict(zip(names, vals))
        elif t.startswith("Feature"):
            _, name, value = t.split(None, 2)
            cur["features"][name] = value
        else:
            raise ValueError(f"unexpected line {t!r}")
    assert cur is None, "unterminated configuration"
    return confs


def test_label_writes_mlip_cfg(tmp_path):
    """--format cfg (or an output ending in .cfg): energies, forces and the
    virial in MLIP's units and conventions, against direct GPAW results; the
    type map is a Feature line."""
    import ase.io
    import numpy as np
    from ase.build import bulk
    from cider_xc import label as lb
    from cider_xc.cli import main
    sic = bulk("SiC", "zincblende", 4.36)
    sic.rattle(0.05, seed=1)
    si = bulk("Si", "diamond", 5.43)
    si.rattle(0.03, seed=2)
    frames = [sic, si]
    inp = tmp_path / "in.extxyz"
    ase.io.write(inp, frames, format="extxyz")
    frames = ase.io.read(inp, index=":")         # what the labeller sees
    out = tmp_path / "train.cfg"
    main(["label", str(inp), "-o", str(out), "--xc", "PBE", "--ecut", "150",
          "--kpts", "1", "1", "1", "--progress", "none"])
    confs = read_cfg(out)
    assert len(confs) == 2
    settings = lb.LabelSettings(xc="PBE", ecut=150, kpts=(1, 1, 1))
    for k, (conf, at) in enumerate(zip(confs, frames)):
        ref = lb.Labeller(settings).compute(at, "gpaw")
        assert conf["features"]["types"] == "0=C,1=Si"       # by atomic number
        symbols = np.array(["C", "Si"])[conf["types"]]
        assert list(symbols) == at.get_chemical_symbols()
        assert list(conf["ids"]) == list(range(1, len(at) + 1))
        assert int(conf["features"]["input_index"]) == k
        np.testing.assert_allclose(conf["cell"], at.cell, atol=1e-11)
        np.testing.assert_allclose(conf["positions"], at.positions, atol=1e-11)
        # (two GPAW runs of the same structure agree to ~1e-8 eV, as in test_label)
        assert conf["energy"] == pytest.approx(ref["energy"], abs=1e-8)
        np.testing.assert_allclose(conf["forces"], ref["forces"], atol=1e-7)
        assert np.abs(ref["forces"]).max() > 1e-2
        # PlusStress = -stress * volume (eV), xx yy zz yz xz xy
        ps = conf["plus_stress"]
        assert list(ps) == ["xx", "yy", "zz", "yz", "xz", "xy"]
        np.testing.assert_allclose(list(ps.values()), -ref["stress"] * at.get_volume(),
                                   atol=1e-8 * at.get_volume())
        assert np.abs(ref["stress"]).max() > 1e-3
    # a rerun resumes the same file; another format on it is refused
    main(["label", str(inp), "-o", str(out), "--xc", "PBE", "--ecut", "150",
          "--kpts", "1", "1", "1", "--progress", "none"])
    assert len(read_cfg(out)) == 2
    with pytest.raises(SystemExit):
        main(["label", str(inp), "-o", str(out), "--format", "extxyz", "--xc", "PBE",
              "--ecut", "150", "--kpts", "1", "1", "1", "--progress", "none"])
    assert len(read_cfg(out)) == 2


def test_cfg_molecules_types_and_energy_only(tmp_path):
    """Molecules (PySCF) get no Supercell and no PlusStress; --cfg-types sets the
    type order; energy-only output has no force columns."""
    import ase.io
    from ase.build import molecule
    from cider_xc import label as lb
    w = molecule("H2O")
    inp = tmp_path / "w.extxyz"
    ase.io.write(inp, [w], format="extxyz")
    settings = lb.LabelSettings(xc="PBE", basis="sto-3g", grid_level=1, energy_only=True)
    out = tmp_path / "w.txt"
    lb.label(inp, out, settings, progress="none", fmt="cfg", cfg_types=["O", "H", "Si"])
    (conf,) = read_cfg(out)
    assert conf["cell"] is None and conf["plus_stress"] is None and conf["forces"] is None
    assert conf["features"]["types"] == "0=O,1=H,2=Si"
    assert list(conf["types"]) == [0, 1, 1]
    assert conf["energy"] == pytest.approx(
        lb.Labeller(settings).compute(w, "pyscf")["energy"], abs=1e-8)
    with pytest.raises(lb.LabelError, match="lacks H"):
        lb.label(inp, tmp_path / "x.cfg", settings, progress="none", cfg_types=["O"])
