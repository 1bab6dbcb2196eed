"""Fit the two global constants of the bond-stiffness elastic estimate.

K = c_K K_affine and G = c_G K_affine (screening/elastic_estimate.py), fitted as geometric
means of measured/affine over the embedded candidates that carry measured moduli. Prints the
per-material ratios, the constants and their log10 scatter; paste them into CALIBRATION.

    python benchmarks/calibrate_elastic_estimate.py
"""

import warnings

import numpy as np

from iondrag.adapters.sources.embedded import load_embedded_candidates
from iondrag.screening.elastic import hill_moduli_GPa
from iondrag.screening.elastic_estimate import affine_bulk_modulus_GPa
from iondrag.screening.structures import prepare_framework

warnings.filterwarnings("ignore")
rows = []
for candidate in load_embedded_candidates():
    data = candidate.elastic
    if data is None:
        continue
    if data.voigt_GPa is not None:
        bulk, shear = hill_moduli_GPa(np.array(data.voigt_GPa))
    else:
        bulk, shear = data.bulk_modulus_GPa, data.shear_modulus_GPa
    affine = affine_bulk_modulus_GPa(prepare_framework(candidate.structure, candidate.mobile_ion))
    rows.append((candidate.candidate_id, bulk, shear, affine))
    print(
        f"{candidate.candidate_id:28s} K {bulk:6.1f} G {shear:6.1f} GPa  K_affine {affine:6.1f}"
        f"  K/K_affine {bulk / affine:5.2f}  G/K_affine {shear / affine:5.2f}"
    )
k_ratio = np.log([b / a for _, b, _, a in rows])
g_ratio = np.log([s / a for _, _, s, a in rows])
print(
    f"n = {len(rows)}: c_K = {np.exp(k_ratio.mean()):.3f} (log10 rms "
    f"{np.std(k_ratio) / np.log(10):.3f}), c_G = {np.exp(g_ratio.mean()):.3f} "
    f"(log10 rms {np.std(g_ratio) / np.log(10):.3f})"
)
