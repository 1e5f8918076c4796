"""The analysis scripts behind the figures in docs/experiments.md: the per-photo gain and its bootstrap interval."""
import csv

from conftest import load_script


def write_report(path, method, psnrs):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["file", "method", "psnr"])
        w.writeheader()
        for i, p in enumerate(psnrs):
            w.writerow({"file": f"p{i}.jpg", "method": method, "psnr": p})
            w.writerow({"file": f"p{i}.jpg", "method": "grey", "psnr": 0.0})


def test_paired_gain_reports_mean_median_count_and_an_interval_around_the_mean(tmp_path, capsys):
    paired_gain = load_script("paired_gain")
    write_report(tmp_path / "new.csv", "new.pt", [21.0, 20.0, 23.0, 19.5])
    write_report(tmp_path / "old.csv", "old.pt", [20.0, 20.5, 21.0, 19.5])  # gains 1, -0.5, 2, 0
    assert paired_gain.main([str(tmp_path / "new.csv"), str(tmp_path / "old.csv"), "--rounds", "2000"]) == 0
    out = capsys.readouterr().out
    assert "4 photos: mean gain +0.62 dB, median +0.50 dB, 2 improve" in out
    low, high = (float(x) for x in out.split("mean ")[-1].replace(" dB", "").split(" to "))
    assert -0.5 <= low < 0.62 < high <= 2.0


def test_paired_gain_refuses_reports_of_different_photos(tmp_path, capsys):
    paired_gain = load_script("paired_gain")
    write_report(tmp_path / "new.csv", "new.pt", [21.0, 20.0])
    write_report(tmp_path / "old.csv", "old.pt", [20.0])
    assert paired_gain.main([str(tmp_path / "new.csv"), str(tmp_path / "old.csv")]) == 1
    assert "different photos" in capsys.readouterr().err
