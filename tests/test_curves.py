from tinylora.trainers.curves import BARS, sparkline, write_curves_png


def test_sparkline_bins_and_scales():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BARS
    assert sparkline([0, 0, 1, 1], width=2) == BARS[0] + BARS[-1]  # bins are means
    assert sparkline([2.0] * 5) == BARS[4] * 5  # flat data: a flat line, no division by zero
    assert sparkline([0.5, 0.5], lo=0, hi=1) == BARS[4] * 2
    assert sparkline([]) == "" and len(sparkline(list(range(100)), width=40)) == 40


def test_curves_png_draws_available_metrics(tmp_path):
    metrics = [{"step": i, "loss": 1 / (i + 1), "grad_norm": 0.1} for i in range(5)]
    path = write_curves_png(metrics, tmp_path / "c.png", {0: 0.2, 5: 0.4})
    assert path.read_bytes()[:4] == b"\x89PNG"
