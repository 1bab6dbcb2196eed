"""U and percolation barriers against bvlain, an independent BVSE implementation.

Differences in the barriers have two explained sources, each tested separately:
* the grid: bvlain samples linspace(0, 1, int(a // 0.2)) along each axis (a different point
  set); on bvlain's own U grid our percolation code reproduces its barriers within its
  0.01 eV bisection step;
* the cutoff: bvlain sums over at most its k = 100 nearest framework ions within 10 A (a
  dense cell has ~250 there; the dropped far Morse tails shift U by ~0.01 eV almost
  uniformly), we switch off smoothly at 6 A by default; with our cutoff at 10 A and bvlain's
  k raised to 400, U agrees point by point.
"""

import warnings

import numpy as np
import pytest
from pymatgen.core import Structure

from iondrag.screening.forcefield import build_pair_field
from iondrag.screening.percolation import percolation_energies
from iondrag.screening.potential import evaluate_grid, evaluate_points, make_grid
from iondrag.screening.structures import prepare_framework

bvlain = pytest.importorskip("bvlain", reason="bvlain (test extra) is the reference")

# ordered OBELiX training structures whose frameworks bvlain can read (it needs order)
REFERENCE_IDS = ["0iv", "1e9", "1xt", "3rx", "47i", "4kt", "5bz", "9lo", "bsa", "fwz", "mq1", "t0h"]


def _framework_and_bvlain(folder, cid: str, **bvse_options):
    """Our framework of OBELiX CIF ``cid`` and bvlain's BVSE of it, with our charges."""
    structure = Structure.from_file(folder / "cifs" / f"{cid}.cif")
    framework = prepare_framework(structure, candidate_id=cid)
    decorated = structure.copy()
    decorated.add_oxidation_state_by_element(
        {el: round(q) for el, q in framework.oxidation_states.items()}
    )
    lain = bvlain.Lain(verbose=False)
    lain.read_structure(decorated, oxi_check=False)
    lain.bvse_distribution(mobile_ion="Li1+", **bvse_options)
    return framework, lain


@pytest.fixture(scope="module")
def references():
    from tests.screening.conftest import obelix_dir

    folder = obelix_dir()
    if not (folder / "cifs").is_dir():
        pytest.skip(f"OBELiX training data not found at {folder} (set IONDRAG_OBELIX_DIR)")
    out = {}
    for cid in REFERENCE_IDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            framework, lain = _framework_and_bvlain(folder, cid, resolution=0.2)
            barriers = lain.percolation_barriers(encut=5.0)
        out[cid] = (framework, lain, barriers)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("cid", ["0iv", "47i", "4kt"])
def test_u_matches_bvlain_pointwise(cid):
    from tests.screening.conftest import obelix_dir

    folder = obelix_dir()
    if not (folder / "cifs").is_dir():
        pytest.skip(f"OBELiX training data not found at {folder} (set IONDRAG_OBELIX_DIR)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        framework, lain = _framework_and_bvlain(folder, cid, resolution=0.25, k=400)
    field = build_pair_field(framework, cutoff_A=10.0, switch_width_A=0.05)
    theirs = lain.distribution
    low = theirs < theirs.min() + 3.0  # the region that matters for transport
    ours = evaluate_points(field, lain.sites[low]).energy_eV
    # k_e: bvlain uses 14.4 eV A, we use CODATA 14.3996 eV A (relative 3e-5)
    np.testing.assert_allclose(ours, theirs[low], atol=2e-3, err_msg=cid)


@pytest.mark.slow
def test_percolation_on_bvlain_grid_matches_bvlain(references):
    for cid, (_, lain, barriers) in references.items():
        grid = lain.data[:-1, :-1, :-1]  # linspace includes both ends: drop the copy
        ours = percolation_energies(grid).barriers_eV
        for d in (1, 2, 3):
            theirs = barriers[f"E_{d}D"]
            if not np.isfinite(theirs):
                assert not np.isfinite(ours[d]) or ours[d] > 4.9, cid
                continue
            # bvlain reports the upper end of a 0.01 eV bracket; ours is within 0.002 eV
            assert ours[d] == pytest.approx(theirs, abs=0.015), (cid, d)


@pytest.mark.slow
def test_default_barriers_within_0p05_eV_of_bvlain(references):
    for cid, (framework, _, barriers) in references.items():
        field = build_pair_field(framework)  # default: 6 A cutoff, our 0.2 A grid
        grid, _ = make_grid(framework.lattice_matrix_A, 0.2)
        energy = evaluate_grid(field, grid).energy_eV.reshape(grid.shape)
        ours = percolation_energies(energy).barriers_eV
        for d in (1, 2, 3):
            theirs = barriers[f"E_{d}D"]
            if np.isfinite(theirs):
                assert ours[d] == pytest.approx(theirs, abs=0.05), (cid, d, ours[d], theirs)
