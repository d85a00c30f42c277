"""The reference values quoted in tests/privacy.rs, computed by the published accountants.

Not part of the test run; rerun by hand to reproduce the quoted numbers:

    VENV=$(mktemp -d) && python3 -m venv "$VENV"
    "$VENV/bin/pip" install dp-accounting==0.6.0 mpmath==1.4.1
    "$VENV/bin/pip" install --no-deps opacus==1.6.0   # its analysis module needs no torch
    "$VENV/bin/python" tests/data/privacy_reference.py

dp-accounting: `RdpAccountant()` (its DEFAULT_RDP_ORDERS), `compose(PoissonSampledDpEvent(q,
GaussianDpEvent(z)), T)`, `get_epsilon_and_optimal_order(delta)` (the conversion of Balle et al.
2020 / Canonne-Kamath-Steinke 2020). The classic conversion `rdp - log(delta) / (order - 1)` is
applied to the same accountant's RDP curve. Opacus: `opacus.accountants.analysis.rdp`
`compute_rdp` + `get_privacy_spent`, over the same orders. mpmath: log(erfc(x)) at 40 digits.
"""

import importlib.util
import logging
import math
import os

import dp_accounting  # noqa: F401
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp
import mpmath
import numpy as np

logging.disable(logging.WARNING)  # dp-accounting warns about the low orders it drops

# Opacus's analysis module is loaded by path: importing the package would import torch.
spec = importlib.util.spec_from_file_location(
    "opacus_rdp",
    os.path.join(
        os.path.dirname(importlib.util.find_spec("opacus").origin),
        "accountants/analysis/rdp.py",
    ),
)
GRID = [
    (1.0, 0.01, 1000, 1e-5),
    (1.1, 0.01, 10000, 1e-5),
    (0.8, 0.1, 100, 1e-5),
    (2.0, 0.5, 50, 1e-6),
    (4.0, 1.0, 10, 1e-5),
    (1.0, 0.001, 100000, 1e-6),
    (1.0, 0.01, 1, 1e-5),
    (0.5, 0.02, 500, 1e-5),
]

# Far corners: very little or very much noise, tiny and near-1 sampling rates.
EXTREMES = [
    (0.3, 0.5, 10, 1e-5),
    (0.3, 0.01, 100, 1e-5),
    (100.0, 1e-6, 1000, 1e-5),
    (0.1, 0.9999, 1, 1e-5),
    (50.0, 0.5, 1, 1e-5),
    (1.0, 1e-9, 1, 1e-5),
    (0.2, 0.2, 1, 1e-5),
    (1000.0, 0.3, 1000, 1e-5),
    (0.05, 0.001, 10, 1e-5),
]


def accountant(z, q, t):
    acc = rdp.RdpAccountant()
    acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), t)
    return acc


def main():
    opa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(opa)
    orders = rdp.DEFAULT_RDP_ORDERS
    print("z, q, T, delta | dp-accounting eps, order | classic eps, order | opacus eps, order")
    for z, q, t, d in GRID:
        acc = accountant(z, q, t)
        eps, order = acc.get_epsilon_and_optimal_order(d)
        classic = [r - math.log(d) / (a - 1) for a, r in zip(acc._orders, acc._rdp)]
        i = int(np.argmin(classic))
        o_eps, o_order = opa.get_privacy_spent(
            orders=orders, rdp=opa.compute_rdp(q=q, noise_multiplier=z, steps=t, orders=orders), delta=d
        )
        print(f"({z}, {q}, {t}, {d:g}) | {float(eps)!r}, {order} | {float(classic[i])!r}, {orders[i]}"
              f" | {float(o_eps)!r}, {o_order}")

    print("extremes: z, q, T, delta | dp-accounting eps, order")
    for z, q, t, d in EXTREMES:
        eps, order = accountant(z, q, t).get_epsilon_and_optimal_order(d)
        print(f"({z}, {q}, {t}, {d:g}) | {float(eps)!r}, {order}")

    # The first round whose epsilon exceeds a budget (epsilon is non-decreasing in T).
    for z, q, d, budget in [(1.0, 0.01, 1e-5, 3.0), (2.0, 0.5, 1e-6, 8.0)]:
        lo, hi = 0, 1
        while accountant(z, q, hi).get_epsilon(d) <= budget:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if accountant(z, q, mid).get_epsilon(d) <= budget:
                lo = mid
            else:
                hi = mid
        print(f"z={z} q={q} delta={d:g} budget={budget}: eps({lo})="
              f"{float(accountant(z, q, lo).get_epsilon(d))!r} eps({hi})={float(accountant(z, q, hi).get_epsilon(d))!r}")

    mpmath.mp.dps = 40
    for x in [-5, -1, -0.5, 0, 0.1, 0.5, 1, 1.9, 2, 2.1, 3, 5, 10, 26, 27, 30, 100, 1000]:
        print(f"log_erfc({x}) = {mpmath.nstr(mpmath.log(mpmath.erfc(x)), 20)}")


if __name__ == "__main__":
    main()
