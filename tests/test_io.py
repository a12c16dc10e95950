"""Model files: round trip, validation, refusal of bad or foreign files."""
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest

import cider_xc
from cider_xc.io import ModelFileError, read_functional, save_functional
from cider_xc.model import CiderFunctional, PolynomialFx


def _shipped_path():
    return os.path.join(cider_xc.functionals_dir(), "test-nl.npz")


def test_round_trip(tmp_path, test_nl, rng):
    p = save_functional(tmp_path / "m.npz", test_nl)
    fn = read_functional(p)
    assert fn.settings == test_nl.settings
    assert fn.cider_x == test_nl.cider_x and fn.semilocal_xc == test_nl.semilocal_xc
    x = rng.uniform(-1, 1, (test_nl.settings.n_features, 50))
    assert np.array_equal(fn.fx(x)[0], test_nl.fx(x)[0])
    with pytest.raises(FileExistsError):
        save_functional(p, test_nl)


def test_shipped_test_nl_is_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_test_nl", os.path.join(cider_xc.functionals_dir(), "make_test_nl.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh = mod.make_test_nl()
    shipped = cider_xc.load("test-nl")
    assert np.array_equal(fresh.fx.exponents, shipped.fx.exponents)
    assert np.array_equal(fresh.fx.coefficients, shipped.fx.coefficients)
    assert fresh.settings == shipped.settings
    assert "test-nl" in cider_xc.available()
    assert cider_xc.load().name == cider_xc.DEFAULT_FUNCTIONAL


def test_truncated_file(tmp_path):
    data = open(_shipped_path(), "rb").read()
    p = tmp_path / "trunc.npz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="trunc.npz"):
        read_functional(p)


def test_corrupted_array_fails_checksum(tmp_path):
    with np.load(_shipped_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["fx_coefficients"] = arrays["fx_coefficients"] * 1.001
    p = tmp_path / "edited.npz"
    np.savez(p, **arrays)
    with pytest.raises(ModelFileError, match="checksum"):
        read_functional(p)


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with np.load(_shipped_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["payload"] = np.array([Evil()], dtype=object)
    p = tmp_path / "evil.npz"
    np.savez(p, **arrays)
    with pytest.raises(ModelFileError, match="pickle"):
        read_functional(p)
    assert not marker.exists()
    # a bare pickle file is not an npz archive either
    q = tmp_path / "bare.npz"
    q.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="bare.npz"):
        read_functional(q)
    assert not marker.exists()


def test_foreign_files(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, weights=np.ones(3))
    with pytest.raises(ModelFileError, match="not a cider-xc model"):
        read_functional(p)
    q = tmp_path / "wrongformat.npz"
    np.savez(q, header=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ModelFileError, match="format"):
        read_functional(q)
    t = tmp_path / "text.npz"
    t.write_text("hello")
    with pytest.raises(ModelFileError, match="text.npz"):
        read_functional(t)
    with pytest.raises(ModelFileError, match="no such model file"):
        read_functional(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="unknown functional"):
        cider_xc.load("no-such-functional")


def test_wrong_feature_count(tmp_path, test_nl):
    bad = PolynomialFx(np.eye(4, dtype=int), np.ones(4) * 0.01)
    with pytest.raises(ValueError, match="4 features"):
        CiderFunctional(test_nl.settings, bad)
    # a file whose header and arrays disagree (checksum recomputed)
    from cider_xc import io as cio
    with np.load(_shipped_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays.pop("header")[()]))
    header["descriptor_settings"]["multipliers"] = [1.0, 2.0]
    arrays["fx_exponents"] = arrays["fx_exponents"]
    header["checksum"] = cio._checksum(header, arrays)
    p = tmp_path / "mismatch.npz"
    np.savez(p, header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ModelFileError, match="features"):
        read_functional(p)


def test_newer_format_version_refused(tmp_path):
    from cider_xc import io as cio
    with np.load(_shipped_path(), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays.pop("header")[()]))
    header["format_version"] = 99
    header["checksum"] = cio._checksum(header, arrays)
    p = tmp_path / "v99.npz"
    np.savez(p, header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ModelFileError, match="version 99"):
        read_functional(p)


def test_polynomial_rejects_constant_term():
    with pytest.raises(ValueError, match="uniform-gas"):
        PolynomialFx(np.zeros((1, 5), dtype=int), [0.1])


def test_polynomial_gradient(test_nl, rng):
    x = rng.uniform(-1, 1, (5, 30))
    f, df = test_nl.fx(x)
    h = 1e-6
    for d in range(5):
        xp, xm = x.copy(), x.copy()
        xp[d] += h
        xm[d] -= h
        assert np.allclose((test_nl.fx(xp)[0] - test_nl.fx(xm)[0]) / (2 * h), df[d],
                           atol=1e-8)


def test_cli_info(capsys):
    from cider_xc.cli import main
    main(["info", "test-nl"])
    out = capsys.readouterr().out
    assert "CIDER_X[test-nl]" in out and "x_g2" in out
    assert "polynomial terms" in out
    main(["info"])                      # the shipped default has an RBF evaluator
    out = capsys.readouterr().out
    assert "CIDER_X[cider-pbe0]" in out and "RBF control points" in out


def test_cli_scf_runs_and_compares(tmp_path, capsys):
    from cider_xc.cli import main
    xyz = tmp_path / "h2.xyz"
    xyz.write_text("2\nH2\nH 0 0 0\nH 0 0 0.74\n")
    # -v 0: PySCF's own log goes to the stream it saw at import, which under
    # pytest's capture may already be closed
    main(["scf", str(xyz), "--basis", "sto-3g", "--grid-level", "1", "-v", "0"])
    lines = capsys.readouterr().out.splitlines()
    table = lines[[i for i, ln in enumerate(lines) if ln.startswith("method")][0] + 1:]
    rows = {line.split()[0]: line.split() for line in table if line.strip()}
    assert set(rows) == {"CIDER", "PBE", "PBE0"}
    assert all(r[1] == "True" for r in rows.values())
    e = {k: float(r[2]) for k, r in rows.items()}
    assert e["CIDER"] != e["PBE"] and abs(e["CIDER"] - e["PBE0"]) < 0.1


def test_cli_scf_open_shell_without_spin(tmp_path, capsys):
    from cider_xc.cli import main
    xyz = tmp_path / "h.xyz"
    xyz.write_text("1\nH atom\nH 0 0 0\n")
    main(["scf", str(xyz), "--basis", "sto-3g", "--grid-level", "1", "-v", "0",
          "--no-compare"])
    lines = capsys.readouterr().out.splitlines()
    row = [ln for ln in lines if ln.startswith("CIDER")][0].split()
    assert row[1] == "True" and -0.6 < float(row[2]) < -0.4


def test_cli_scf_bad_geometry(tmp_path):
    from cider_xc.cli import main
    bad = tmp_path / "broken.xyz"
    bad.write_text("this is not a geometry\n")
    with pytest.raises(SystemExit, match="broken.xyz"):
        main(["scf", str(bad)])


@pytest.mark.parametrize("kind", ["random", "text", "empty", "npy"])
def test_not_an_npz_is_not_called_pickled(tmp_path, kind):
    """np.load reports any non-zip file as "pickled data" when pickles are
    refused; a model file that is random bytes or text is simply not an npz."""
    p = tmp_path / f"{kind}.npz"
    if kind == "random":
        data = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()
        assert data[:1] != b"\x80" and data[:2] != b"PK"
        p.write_bytes(data)
    elif kind == "text":
        p.write_text("this is not a model file\n" * 20)
    elif kind == "empty":
        p.write_bytes(b"")
    else:
        with open(p, "wb") as fh:
            np.save(fh, np.ones(3))
    with pytest.raises(ModelFileError) as info:
        read_functional(p)
    msg = str(info.value)
    assert f"{kind}.npz" in msg
    assert "not a valid .npz" in msg and "not a model file" in msg
    assert "pickle" not in msg
