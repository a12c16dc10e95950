"""The README's tables trace to committed results files (DESIGN.md section 9):
the G2-1 validation table against benchmarks/results_g2_validation.json and
the PySCF speed table against the results file its section names.  A results
file regenerated without updating the README (or the other way round) fails
here.  The numbers are compared at the precision the README prints."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section(title):
    """Text of the README section whose heading line contains ``title``, up to
    the next heading of the same or a higher level."""
    lines = README.read_text().splitlines()
    for i, ln in enumerate(lines):
        m = re.match(r"^(#+)\s+(.*)$", ln)
        if m and title in m.group(2):
            level = len(m.group(1))
            out = []
            for ln2 in lines[i + 1:]:
                m2 = re.match(r"^(#+)\s", ln2)
                if m2 and len(m2.group(1)) <= level:
                    break
                out.append(ln2)
            return "\n".join(out)
    raise AssertionError(f"README has no section {title!r}")


def _tables(text):
    """Markdown tables in ``text``: lists of rows (lists of cell strings),
    header first, separator row dropped."""
    tables, cur = [], []
    for ln in text.splitlines() + [""]:
        if ln.strip().startswith("|"):
            cells = [c.strip() for c in ln.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def _number(cell):
    """(value, decimals) of the first number in a table cell."""
    m = re.search(r"-?\d+(?:\.(\d+))?", cell)
    assert m, f"no number in README cell {cell!r}"
    return float(m.group(0)), len(m.group(1) or "")


def _agrees(cell, value):
    """The README cell shows ``value`` rounded to the digits it prints."""
    v, d = _number(cell)
    return abs(value - v) <= 0.5 * 10 ** -d + 1e-9 * abs(value)


# ---------------------------------------------------------------- G2-1 table
G2_TITLE = "Validation of the shipped default"


def _g2():
    text = _section(G2_TITLE)
    assert "benchmarks/g2_validation.py" in text, "the section must name the script"
    m = re.search(r"benchmarks/(results_g2_validation[\w.-]*\.json)", text)
    assert m, "the G2-1 section must name its results file"
    res = json.loads((ROOT / "benchmarks" / m.group(1)).read_text())
    (table,) = [t for t in _tables(text) if "G2-1" in t[0][0]]
    rows = {r[0]: r[1:] for r in table[1:]}
    return table, rows, res


def _row(rows, start):
    (key,) = [k for k in rows if k.startswith(start)]
    return rows[key]


def test_g2_table_atomization_and_scf_rows_match_results():
    table, rows, res = _g2()
    assert table[0][1:] == ["CIDER", "PBE"]
    ex = res["exchange"]
    cider, pbe = _row(rows, "atomization exchange on PBE0 orbitals")
    assert _agrees(cider, ex["mae_aex_cider"]) and _agrees(pbe, ex["mae_aex_pbe"]), (
        cider, pbe, ex)
    cider, pbe = _row(rows, "self-consistent atomization energy vs PBE0, MAD")
    assert _agrees(cider, res["scf_mad_CIDER"]) and _agrees(pbe, res["scf_mad_PBE"])
    # max deviation (and the molecule named for CIDER) from the per-molecule table
    ae = res["atomization_kcal"]
    cider, pbe = _row(rows, "same, max deviation")
    for method, cell in (("CIDER", cider), ("PBE", pbe)):
        dev = {n: abs(r[method] - r["PBE0"]) for n, r in ae.items()}
        worst = max(dev, key=dev.get)
        assert _agrees(cell, dev[worst]), (method, cell, worst, dev[worst])
        m = re.search(r"\((\S+)\)", cell)
        if m:
            assert m.group(1) == worst, (method, cell, worst)
    # the molecule count in the header
    n = int(re.search(r"(\d+) G2-1 molecules", table[0][0]).group(1))
    assert n == len(ae)


def test_g2_table_molecule_exchange_row_matches_results():
    """The first row ("molecules only") is printed by g2_validation.py and,
    since issue 22, saved in its results file too."""
    table, rows, res = _g2()
    ex = res["exchange"]
    if "mae_ex_molecules_cider" not in ex:
        pytest.skip("results_g2_validation.json predates the saved 'molecules only' "
                    "exchange MAE: rerun benchmarks/g2_validation.py to check this row")
    cider, pbe = _row(rows, "exact exchange on PBE0 orbitals, MAE (molecules)")
    assert _agrees(cider, ex["mae_ex_molecules_cider"]), (cider, ex)
    assert _agrees(pbe, ex["mae_ex_molecules_pbe"]), (pbe, ex)
    assert ex["n_molecules"] == len(res["atomization_kcal"])


# --------------------------------------------------------- PySCF speed table
SPEED_TITLE = "Speed (PySCF)"


def _results_table(path):
    """Numeric rows of a results file: a markdown table (its first), a
    whitespace table (.txt: header line, then rows of numbers) or JSON rows (a list of dicts, or a dict with a
    "rows" list).  Returns (column names, list of rows as lists of floats)."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = data["rows"] if isinstance(data, dict) else data
        assert isinstance(rows, list) and rows and isinstance(rows[0], dict), (
            f"{path.name}: unknown layout; teach tests/test_readme.py to read it")
        cols = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
        return cols, [[float(r[c]) for c in cols] for r in rows]
    text = path.read_text()
    md = [t for t in _tables(text) if len(t) > 1]
    if md:
        # a markdown table (the first one): every cell read as its first number
        header = md[0][0]
        return header, [[_number(c)[0] for c in r] for r in md[0][1:]]
    header, rows = None, []
    for ln in text.splitlines():
        toks = ln.split()
        try:
            vals = [float(t) for t in toks]
        except ValueError:
            if rows:
                break          # the table ended
            header = re.split(r"\s{2,}", ln.strip())
            continue
        if vals:
            rows.append(vals)
    assert rows, f"{path.name}: no numeric table found"
    return header, rows


def _speed():
    text = _section(SPEED_TITLE)
    m = re.search(r"benchmarks/(results_[\w.-]+\.(?:txt|json))", text)
    assert m, "the PySCF speed section must name its results file"
    script = re.search(r"benchmarks/(\w+\.py)", text)
    assert script and (ROOT / "benchmarks" / script.group(1)).exists(), \
        "the PySCF speed section must name an existing benchmark script"
    path = ROOT / "benchmarks" / m.group(1)
    (table,) = [t for t in _tables(text) if len(t) > 2]
    return text, table, path


def test_speed_table_matches_its_results_file():
    """Every column of the README table is a column of the results file, row
    by row, at the printed precision (matched by value, so that a table
    regenerated from the file with other headings still passes)."""
    _, table, path = _speed()
    cols, rows = _results_table(path)
    header, body = table[0], table[1:]
    assert len(body) == len(rows), (f"README speed table has {len(body)} rows, "
                                    f"{path.name} {len(rows)}")
    for j, name in enumerate(header):
        cells = [r[j] for r in body]
        matches = [k for k in range(len(rows[0]))
                   if all(_agrees(c, row[k]) for c, row in zip(cells, rows))]
        assert matches, (f"README speed column {name!r} = {cells} matches no column of "
                         f"{path.name} ({cols})")


def test_speed_section_names_the_timed_functional():
    text, _, path = _speed()
    m = re.search(r"CIDER_X\[([\w.-]+)\]", path.read_text())
    if m is None:
        pytest.skip("the results file does not name the functional")
    assert m.group(1) in text
