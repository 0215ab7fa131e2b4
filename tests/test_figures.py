"""What the notebooks share (polar_lib.figures): a figure saved with the numbers behind it, one look."""
import logging
import warnings

import matplotlib
import pandas as pd

from polar_lib.figures import notebook_style, quiet, save_figure

matplotlib.use("Agg")


def test_save_figure_writes_the_png_and_the_numbers_that_plot_it(tmp_path):
    import matplotlib.pyplot as plt

    data = pd.DataFrame({"r": [4, 8, 16], "stable rank": [1.25, 1.5, 2.0]})
    fig, ax = plt.subplots()
    ax.plot(data["r"], data["stable rank"])
    png = save_figure(fig, data, "example", tmp_path / "figures")
    plt.close(fig)
    assert png == tmp_path / "figures" / "example.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "figures" / "example.csv"), data)


def test_notebook_style_hides_future_warnings_and_lm_evals_chatter(capsys):
    logger = logging.getLogger("lm_eval")
    level = logger.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notebook_style()
        warnings.warn("deprecated", FutureWarning)
        warnings.warn("kept", UserWarning)
    try:
        assert [str(w.message) for w in caught] == ["kept"]
        assert logger.getEffectiveLevel() == logging.ERROR
    finally:
        logger.setLevel(level)
    with quiet():
        print("swallowed")
    assert capsys.readouterr().out == ""
