"""The flag vocabularies and the generated flag reference."""

from mdslam import flags
from mdslam.flags import LabelFlag, SpectrumFlag


def test_every_bit_has_one_row_with_its_own_texts():
    tab = flags.flag_table()
    names = list(tab["name"])
    assert names == [f"LabelFlag.{f.name}" for f in LabelFlag] + [f"SpectrumFlag.{f.name}" for f in SpectrumFlag]
    row = {n: r for n, r in zip(names, tab, strict=True)}
    # equal values in the two enums (READ_ERROR == FAILED == 1) must not share texts
    assert row["SpectrumFlag.READ_ERROR"]["when"].startswith("reading")
    assert row["LabelFlag.FAILED"]["when"].startswith("labelling")
    assert all(r["meaning"] and r["when"] and r["action"] for r in tab)


def test_label_bits_do_not_overlap_the_per_label_domain_bits():
    per_label = {int(LabelFlag.OUTSIDE_DOMAIN) << k for k in range(8)}
    fixed = [int(f) for f in LabelFlag if f is not LabelFlag.OUTSIDE_DOMAIN]
    assert not per_label & set(fixed)
    assert flags.label_flag_meanings(int(LabelFlag.OUTSIDE_DOMAIN) << 2 | 1, ["teff", "logg", "fe_h"]) == [
        flags.LABEL_FLAG_MEANING[LabelFlag.FAILED], "fe_h outside the domain"]
