"""Training of CIDER functionals (installed as ``cider_xc.training``).

Reference data generation, the Gaussian process and the mapping to the fast
evaluator arrive with the training issue; this package is a placeholder so
that the layout of DESIGN.md section 4 is in place.
"""
