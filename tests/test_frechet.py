"""The Fréchet distance against closed forms, the FD-VGG16 column of evaluate, and the FID / IS plumbing."""
import numpy as np
import pytest
import torch

import Engine
from FrechetDistance import FeatureStats, InceptionScores, frechet_distance


def test_frechet_distance_matches_closed_forms_on_gaussians():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[1.0]])) == \
        pytest.approx(9 + (2 - 1) ** 2)
    # covariances that commute (shared eigenvectors): |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T) == pytest.approx(0, abs=1e-8)


def test_feature_stats_are_the_sample_mean_and_covariance_whatever_the_chunking():
    x = np.random.default_rng(1).normal(size=(50, 4))
    stats = FeatureStats()
    for chunk in (x[:7], x[7:8], x[8:]):
        stats.add(chunk)
    mu, cov = stats.mean_cov()
    assert np.allclose(mu, x.mean(axis=0)) and np.allclose(cov, np.cov(x, rowvar=False))


def evaluate_args(photo_dir, tiny_checkpoint, out, *extra):
    return ["--mode", "evaluate", "--checkpoint", str(tiny_checkpoint), "--input", str(photo_dir),
            "--output", str(out), "--device", "cpu", *extra]


def table_row(text, method):
    line = next(line for line in text.splitlines() if line.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_evaluate_prints_the_fd_vgg16_column(photo_dir, tiny_checkpoint, tmp_path, capsys):
    assert Engine.main(evaluate_args(photo_dir, tiny_checkpoint, tmp_path / "ev")) == 0
    out = capsys.readouterr().out
    assert "| FD-VGG16 |" in out and "Not FID" in out
    ours, grey = float(table_row(out, "tiny.pt")[-1]), float(table_row(out, "grey")[-1])
    assert ours > 0 and grey > 0 and ours != grey


def test_each_folder_is_scored_on_its_own_photos(photo_dir, tiny_checkpoint, tmp_path, capsys):
    """The scorers are loaded once and reset per folder: the same folder twice gives the same FD twice."""
    args = ["--mode", "evaluate", "--checkpoint", str(tiny_checkpoint), "--input", str(photo_dir), str(photo_dir),
            "--output", str(tmp_path / "ev"), "--device", "cpu"]
    assert Engine.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny.pt |")]
    assert len(rows) == 2 and rows[0] == rows[1]


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A file with torch-fidelity's Inception-v3 layout and random values (the real one is a download)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    real = fe.load_state_dict_from_url, fe.FeatureExtractorInceptionV3.load_state_dict
    with pytest.MonkeyPatch.context() as mp:  # undone on leaving, so no later test meets the stubs
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    assert (fe.load_state_dict_from_url, fe.FeatureExtractorInceptionV3.load_state_dict) == real
    for m in net.modules():  # He initialisation, so the activations neither vanish nor explode over 20 layers
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def test_evaluate_reports_fid_and_is_with_local_inception_weights(photo_dir, tiny_checkpoint, tmp_path, capsys,
                                                                  random_inception):
    assert Engine.main(evaluate_args(photo_dir, tiny_checkpoint, tmp_path / "ev", "--fid-weights",
                                     str(random_inception))) == 0
    out = capsys.readouterr().out
    assert "| FD-VGG16 | FID | IS |" in out
    fid, inception = (float(c) for c in table_row(out, "tiny.pt")[-2:])
    assert fid > 0 and inception >= 1.0
    assert float(table_row(out, "original")[-1]) >= 1.0  # the originals' own IS, for scale


def test_wrong_inception_files_are_clear_errors(tmp_path, random_inception):
    bad = tmp_path / "not_inception.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not_inception.pth: not torch-fidelity's Inception-v3 layout"):
        InceptionScores(bad)
    with pytest.raises(FileNotFoundError, match="missing.pth: --fid-weights file not found"):
        InceptionScores(tmp_path / "missing.pth")
    scores = InceptionScores(random_inception)
    rng = np.random.default_rng(0)
    for i in range(4):
        scores.add("a", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        scores.add("b", rng.integers(0, 255, (50, 30, 3), dtype=np.uint8))
    assert scores.scores("a", "a")["fid"] == pytest.approx(0, abs=1e-3)
    assert scores.scores("a", "b")["fid"] > 0
