"""Physical constants shared across mdslam (one definition each)."""

C_KMS = 299792.458
"""Speed of light, km/s."""

H_ALPHA_VACUUM = 6564.61
"""H-alpha, vacuum wavelength in Angstrom."""

__all__ = ["C_KMS", "H_ALPHA_VACUUM"]
