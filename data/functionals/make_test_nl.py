"""Regenerate data/functionals/test-nl.npz, the smooth test functional.

test-nl is not trained: it is a deliberately non-trivial polynomial in every
descriptor (p, alpha and three nonlocal features), with fixed pseudo-random
coefficients, used by tests and as the default until a trained functional
ships.  Composition: the PBE0-surrogate form
0.25 E_x^CIDER + 0.75 E_x^PBE + E_c^PBE.

    python data/functionals/make_test_nl.py
"""
import itertools
import os

import numpy as np


def make_test_nl():
    from cider_xc.descriptors import DescriptorSettings
    from cider_xc.model import CiderFunctional, PolynomialFx
    settings = DescriptorSettings(A=1.0, B=0.1, C=0.5, multipliers=(0.5, 1.0, 2.0))
    nf = settings.n_features
    terms = [e for d in (1, 2) for e in itertools.product(range(d + 1), repeat=nf)
             if sum(e) == d]
    terms += [(1, 1, 1, 0, 0), (0, 1, 0, 1, 1), (0, 0, 1, 1, 1), (1, 0, 0, 0, 2)]
    rng = np.random.default_rng(20261121)
    coef = 0.06 * rng.standard_normal(len(terms))
    lead = {(0, 0, 1, 0, 0): -0.12, (0, 0, 0, 1, 0): 0.08, (0, 1, 0, 0, 0): 0.05,
            (1, 0, 0, 0, 0): -0.04}
    for i, t in enumerate(terms):
        coef[i] = lead.get(t, coef[i])
    fx = PolynomialFx(np.array(terms), coef)
    header = {"composition": {"trained_on": "none (test model)"},
              "provenance": {"created_by": "data/functionals/make_test_nl.py",
                             "note": "smooth untrained test functional"}}
    return CiderFunctional(settings, fx, cider_x=0.25,
                           semilocal_xc="0.75*GGA_X_PBE, GGA_C_PBE",
                           name="test-nl", header=header)


if __name__ == "__main__":
    from cider_xc.io import save_functional
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test-nl.npz")
    print(save_functional(out, make_test_nl(), overwrite=True))
