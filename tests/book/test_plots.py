"""The book's figures draw what the rows carry: a one-seed curve its 95% intervals, a several-seed curve its range."""
import matplotlib

matplotlib.use("Agg")

from matplotlib.collections import PolyCollection  # noqa: E402

from xlprune_lib.book import plots  # noqa: E402


def _rows(seeds=(0,), intervals=True):
    rows = []
    for seed in seeds:
        for method, slope in (("magnitude", 0.2), ("random", 0.4)):
            for s in (0.0, 0.5, 0.9):
                acc = 0.9 - slope * s + 0.01 * seed
                rows.append({"method": method, "sparsity": s, "seed": seed, "validation_accuracy": acc,
                             **({"validation_ci_low": acc - 0.02, "validation_ci_high": acc + 0.02}
                                if intervals else {})})
    return rows


def _bands(fig):
    return [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]


def test_one_seed_curves_draw_their_intervals_in_the_series_colour():
    fig = plots.sparsity_curves(_rows(), hue_order=["magnitude", "random"])
    bands = _bands(fig)
    assert len(bands) == 2
    colours = plots.hue_colours(["magnitude", "random"])
    for band, name in zip(bands, ["magnitude", "random"]):
        assert tuple(band.get_facecolor()[0][:3]) == tuple(matplotlib.colors.to_rgb(colours[name]))
        low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
        slope = 0.2 if name == "magnitude" else 0.4
        assert abs(low - (0.9 - slope * 0.9 - 0.02)) < 1e-9 and abs(high - 0.92) < 1e-9


def test_curves_without_intervals_draw_none_and_seeds_draw_their_range():
    assert not _bands(plots.sparsity_curves(_rows(intervals=False)))
    assert not _bands(plots.sparsity_curves(_rows(seeds=(0, 1))))    # several seeds' intervals: no zig-zag
    spread = plots.sparsity_curves(_rows(seeds=(0, 1, 2)), spread=True)
    assert len(_bands(spread)) == 2          # seaborn's min-max band per series, not the per-seed intervals


def test_a_series_of_one_point_gets_an_error_bar():
    rows = [r for r in _rows() if r["method"] == "magnitude"] + [r for r in _rows() if r["method"] == "random"][-1:]
    fig = plots.sparsity_curves(rows)
    assert len(_bands(fig)) == 1                                  # the magnitude band only
    bars = [c for c in fig.axes[0].collections if isinstance(c, matplotlib.collections.LineCollection)]
    (segment,) = bars[0].get_segments()                          # random's one point: 0.54 +- 0.02 at 90%
    assert segment[:, 0].tolist() == [0.9, 0.9]
    assert abs(segment[0, 1] - 0.52) < 1e-9 and abs(segment[1, 1] - 0.56) < 1e-9


def test_every_figure_is_saved_as_png_and_svg(tmp_path):
    fig = plots.sparsity_curves(_rows())
    png = plots.save(fig, tmp_path / "figures", "02_curves")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = png.with_suffix(".svg")
    assert svg.is_file() and "<svg" in svg.read_text()[:2000]
    first = svg.read_bytes()
    plots.save(fig, tmp_path / "figures", "02_curves")
    assert svg.read_bytes() == first                        # no build date inside: the same figure, the same bytes

