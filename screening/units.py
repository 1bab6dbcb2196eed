"""Units and physical constants: the one place where iondrag's unit system is defined.

Internal system
---------------
* Geometry and energy, as in pymatgen: lengths in angstrom (A), energies in electronvolt (eV),
  so potentials are eV, gradients eV/A and Hessians eV/A^2.
* Masses in atomic mass units (amu, pymatgen's ``Element.atomic_mass``).
* Temperature in kelvin (K), charge in units of the elementary charge e.
* Everything dynamical (Lambda, gamma, mobility, diffusion, conductivity) is in SI:
  Lambda in s^3/kg, gamma in kg/s, mobility in s/kg (= m/(N s)), D in m^2/s, sigma in S/m.

Quantities that leave the package carry their unit in their name (``barrier_eV``,
``sigma_S_per_cm``, ``drag_saddle_kg_per_s``); this module holds the conversion factors.
"""

from __future__ import annotations

from scipy import constants as _c

#: Boltzmann constant in eV/K.
KB_EV_PER_K: float = _c.k / _c.e
#: Reduced Planck constant in eV s.
HBAR_EV_S: float = _c.hbar / _c.e
#: Boltzmann constant in J/K.
KB_J_PER_K: float = _c.k
#: Elementary charge in C.
E_CHARGE_C: float = _c.e
#: Atomic mass unit in kg.
AMU_KG: float = _c.atomic_mass
#: 1 eV in J.
EV_J: float = _c.e
#: 1 A in m.
ANGSTROM_M: float = 1e-10
#: 1 eV/A^2 in N/m (Hessian of U to SI): 16.0218 N/m.
EV_PER_A2_TO_N_PER_M: float = _c.e / 1e-20
#: 1 eV/A in N (force to SI).
EV_PER_A_TO_N: float = _c.e / 1e-10
#: 1 GPa in Pa.
GPA_PA: float = 1e9
#: 1 eV/A^3 in GPa: 160.2177 GPa.
EV_PER_A3_TO_GPA: float = _c.e / 1e-30 / 1e9
#: 1 S/m in S/cm.
S_PER_M_TO_S_PER_CM: float = 1e-2
#: 1 A^-3 in m^-3.
PER_A3_TO_PER_M3: float = 1e30
#: 1 g/cm^3 in kg/m^3.
G_PER_CM3_TO_KG_PER_M3: float = 1e3
#: Coulomb constant e^2/(4 pi eps0) in eV A: 14.3996 eV A.
COULOMB_EV_A: float = _c.e / (4 * _c.pi * _c.epsilon_0) / 1e-10


def thermal_energy_eV(temperature_K: float) -> float:
    """Return k_B T in eV for a temperature in K."""
    return KB_EV_PER_K * temperature_K
