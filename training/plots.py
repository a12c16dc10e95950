"""Figures: parity of exchange energies, F_x against s and alpha."""
from __future__ import annotations

import os

import numpy as np

from .fit import HARTREE_TO_KCAL


def parity_plot(result, path, title="exchange energies"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, lab in ((axes[0], "systems", "E_x"), (axes[1], "atomization", "atomization E_x")):
        tab = result[key]
        if not tab:
            ax.set_visible(False)
            continue
        ref = np.array([r["exx"] for r in tab.values()]) * HARTREE_TO_KCAL
        for meth, mk in (("pbe", "x"), ("cider", "o")):
            val = np.array([r[meth] for r in tab.values()]) * HARTREE_TO_KCAL
            mae = np.mean(np.abs(val - ref))
            ax.scatter(ref, val - ref, marker=mk, s=14,
                       label=f"{meth.upper()} (MAE {mae:.2f} kcal/mol)")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(f"exact {lab} / kcal/mol")
        ax.set_ylabel("model - exact / kcal/mol")
        ax.legend(fontsize=8)
        ax.set_title(lab)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def enhancement_plot(fn, path, nonlocal_x=0.0):
    """F_x against s for several alpha, nonlocal inputs fixed at ``nonlocal_x``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cider_xc.descriptors.semilocal import pbe_enhancement
    s = np.linspace(0, 3, 200)
    p = s ** 2
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for alpha in (0.0, 0.5, 1.0, 2.0, 5.0):
        x = np.zeros((fn.settings.n_features, s.size))
        x[0] = p / (1 + p)
        x[1] = (alpha - 1) / (alpha + 1)
        x[2:] = nonlocal_x
        F = fn.enhancement(x, p)[0]
        ax.plot(s, F, label=f"alpha = {alpha:g}")
    ax.plot(s, pbe_enhancement(p)[0], "k--", label="PBE")
    if fn.bound is not None:
        ax.axhline(fn.bound.fmax, color="grey", lw=0.8, ls=":", label="bound (Lieb-Oxford)")
    ax.set_xlabel("s")
    ax.set_ylabel("F_x")
    ax.set_title(f"{fn.name}: F_x at nonlocal inputs x_g = {nonlocal_x:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
