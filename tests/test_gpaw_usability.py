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
