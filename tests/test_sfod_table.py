"""scripts/sfod_table.py: the run folders of repeated adaptation seeds (the table reads cached runs by name) and
the share of the source-only → oracle gap a method closes."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("sfod_table", ROOT / "scripts" / "sfod_table.py")
sfod_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sfod_table)


def test_adapt_runs_keep_the_single_seed_layout_and_name_the_repeats():
    run = Path("runs/sfod3k/s2")
    assert sfod_table.adapt_runs(run, "fog-mt-ignore0.01-hplauto", 2, 1) == [(2, run / "fog-mt-ignore0.01-hplauto")]
    assert sfod_table.adapt_runs(run, "night-lpld", 2, 3) == [
        (2, run / "night-lpld"), (102, run / "night-lpld-aseed102"), (202, run / "night-lpld-aseed202")]


def test_gap_closed_is_the_share_of_the_source_to_oracle_gap():
    rows = {"source-only": {"night": [0.06, 0.08]}, "oracle": {"night": [0.40, 0.42]},
            "mt": {"night": [0.09, 0.10, 0.11, 0.10]}, "lpld": {"night": []}}
    assert abs(sfod_table.gap_closed(rows, "mt", "night") - (0.10 - 0.07) / (0.41 - 0.07)) < 1e-12
    assert sfod_table.gap_closed(rows, "lpld", "night") is None           # no runs
    assert sfod_table.gap_closed({"mt": rows["mt"]}, "mt", "night") is None  # no source-only / oracle rows
