"""``levels`` selects signal levels in the simulator as everywhere else; a level's data do not depend on the choice."""

from __future__ import annotations

import numpy as np
import pytest

from dfcan_tf.cli import main
from dfcan_tf.data.biosr import discover
from dfcan_tf.data.files import read_mrc
from dfcan_tf.data.simulate import N_LEVELS, level_photons, select_levels, simulate_cell
from dfcan_tf.errors import DfcanError


def test_select_levels_reads_the_same_specs_as_evaluate():
    assert select_levels(None) == list(range(1, 10))
    assert select_levels(9) == [9] and select_levels("9") == [9]
    assert select_levels("1-3") == [1, 2, 3] and select_levels("5,1,3") == [1, 3, 5]
    assert select_levels("12", n_levels=12) == [12]
    for bad in ("0", "10", "3-1", "low"):
        with pytest.raises(DfcanError, match="level"):
            select_levels(bad)


def test_a_level_alone_equals_that_level_of_the_full_simulation():
    full = simulate_cell("CCPs", size=32, seed=5)
    alone = simulate_cell("CCPs", size=32, levels=3, seed=5)
    pair = simulate_cell("CCPs", size=32, levels="1,3", seed=5)
    assert full.raw.shape[0] == N_LEVELS == 9 and full.levels == list(range(1, 10))
    assert alone.raw.shape == (1, 9, 32, 32) and alone.levels == [3] and pair.levels == [1, 3]
    # Same photons (level 3 of the geometric 15..600 ladder of 9 levels), same noise, same GT.
    expected = 15.0 * 40.0 ** (2 / 8)
    assert alone.params["levels"] == [full.params["levels"][2]]
    assert alone.params["levels"][0]["photons"] == pytest.approx(expected, rel=1e-12)
    assert level_photons(9)[2] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(alone.raw[0], full.raw[2])
    np.testing.assert_array_equal(pair.raw, full.raw[[0, 2]])
    np.testing.assert_array_equal(alone.gt, full.gt)
    np.testing.assert_array_equal(alone.raw_gt, full.raw_gt)
    assert alone.signal_scale[0] == full.signal_scale[2] and alone.background[0] == full.background[2]


def test_cli_levels_writes_exactly_those_levels(tmp_path, capsys):
    base = ["--specimens", "CCPs", "--cells", "1", "--size", "32", "--no-progress"]
    assert main(["simulate", str(tmp_path / "one"), *base, "--levels", "1,3"]) == 0
    assert "levels 1,3 of 9" in capsys.readouterr().out
    assert [r.level for r in discover(tmp_path / "one")] == [1, 3]
    assert main(["simulate", str(tmp_path / "all"), *base]) == 0
    assert [r.level for r in discover(tmp_path / "all")] == list(range(1, 10))
    for level in (1, 3):
        name = f"CCPs/Cell_001/RawSIMData_level_{level:02d}.mrc"
        a, _ = read_mrc(tmp_path / "one" / name)
        b, _ = read_mrc(tmp_path / "all" / name)
        np.testing.assert_array_equal(a, b)
    # A bare number is that level, as for evaluate; beyond --n-levels it is refused, naming the flag.
    assert main(["simulate", str(tmp_path / "nine"), *base, "--levels", "9"]) == 0
    assert [r.level for r in discover(tmp_path / "nine")] == [9]
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "bad"), *base, "--levels", "10"]) == 2
    assert "--n-levels" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["simulate", str(tmp_path / "twelve"), *base, "--n-levels", "12", "--levels", "12"]) == 0
    assert [r.level for r in discover(tmp_path / "twelve")] == [12]
