"""Faithfulness of the audio images: what the pixels must show for audio with known content, for every entry of
the representation table."""

from __future__ import annotations

import dataclasses
import functools
import warnings

import librosa
import librosa.display
import numpy as np
import pytest
import soundfile as sf

from maivar.audio import drawing, pymaivar, raster, spectra, wav
from maivar.audio.representations import NAMES, REPRESENTATIONS, get_representation, of_kind
from maivar.core.errors import PipelineError
from maivar.core.params import load_params
from maivar.core.rejections import ClipFailure
from maivar.settings.base import SettingsError
from maivar.settings.render import RenderSettings

SR = 22050  # a lower rate than the default keeps the tests fast; the mapping uses the actual rate
SIZE = 64
N_FFT, HOP, N_MFCC = 2048, 512, 20
ANALYSIS = spectra.Analysis(N_FFT, HOP, N_MFCC, chroma_tuning=0.0)


@pytest.fixture(scope="module")
def render_params():
    return load_params()["render"]


@pytest.fixture(scope="module")
def style(render_params):
    return drawing.style_from_settings(RenderSettings.from_mapping(render_params))


def draw(y, representation, style, size=SIZE, sr=SR, tuning=0.0, mapping="nearest", recipe="corrected"):
    return drawing.render(np.asarray(y, dtype=np.float32), sr, representation, size=size, n_fft=N_FFT, hop_length=HOP,
                     n_mfcc=N_MFCC, chroma_tuning=tuning, style=style, pixel_mapping=mapping, recipe=recipe)


def seconds(d, sr=SR):
    return np.arange(int(d * sr)) / sr


def tone(freq, d=2.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * seconds(d))).astype(np.float32)


def chirp(f0=200.0, f1=6000.0, d=2.0):
    t = seconds(d)
    return (0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * d) * t**2))).astype(np.float32)


def noise(d=2.0, amp=0.3, seed=0):
    return (amp * np.random.default_rng(seed).standard_normal(len(seconds(d)))).astype(np.float32)


def clicks(d=2.0, every_s=0.25):
    y = 0.01 * np.sin(2 * np.pi * 110.0 * seconds(d))  # a quiet hum between the broadband clicks
    positions = np.arange(int(0.1 * SR), len(y), int(every_s * SR))
    y[positions] = 1.0
    return y.astype(np.float32), positions


def unmap(image, cmap_name):
    """Invert a colormap: each pixel -> its position in [0, 1] on the colormap (nearest LUT entry)."""
    lut = raster.colormap_lut(cmap_name).astype(np.int32)
    d = ((image[..., None, :].astype(np.int32) - lut[None, None]) ** 2).sum(-1)
    return d.argmin(-1) / 255.0


def nearest_resample(matrix, n_samples, size):
    """An independent, naive downsampling of a librosa matrix: nearest frame to each column's center time,
    the bin under each row's center (bin 0 at the bottom)."""
    centers = (np.arange(size) + 0.5) * n_samples / size
    frames = np.clip(np.rint(centers / HOP).astype(int), 0, matrix.shape[1] - 1)
    bins = np.floor((size - 1 - np.arange(size) + 0.5) * matrix.shape[0] / size).astype(int)
    return matrix[np.ix_(bins, frames)]


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def curve_rows(image, curve_rgb):
    """Mean row of the curve's pixels in each column (NaN where the column has none)."""
    mask = (image == curve_rgb.astype(np.uint8)).all(-1)
    rows = np.arange(image.shape[0])[:, None]
    with np.errstate(invalid="ignore"):
        return (mask * rows).sum(0) / mask.sum(0)


# ------------------------------------------------------------------------------------ the mapping


def test_overlap_weights_rows_sum_to_one_and_average_the_covered_cells():
    w = raster.overlap_weights(np.arange(9), np.linspace(0, 8, 5))  # 8 cells -> 4 pixels
    np.testing.assert_allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(w @ np.arange(8.0), [0.5, 2.5, 4.5, 6.5])
    up = raster.overlap_weights(np.arange(3), np.linspace(0, 2, 7))  # 2 cells -> 6 pixels: each repeated
    np.testing.assert_allclose(up @ np.array([1.0, 5.0]), [1, 1, 1, 5, 5, 5])


def test_nearest_weights_pick_the_cell_under_each_pixel_center():
    w = raster.nearest_weights(np.arange(9), np.linspace(0, 8, 5))  # 8 cells -> 4 pixels: centers 1, 3, 5, 7
    np.testing.assert_array_equal(w @ np.arange(8.0), [1, 3, 5, 7])  # a center on a boundary: the later cell
    assert set(np.unique(w)) == {0.0, 1.0} and (w.sum(1) == 1).all()
    up = raster.nearest_weights(np.arange(3), np.linspace(0, 2, 7))  # 2 cells -> 6 pixels: each repeated
    np.testing.assert_array_equal(up @ np.array([1.0, 5.0]), [1, 1, 1, 5, 5, 5])


def test_axis_weights_rejects_an_unknown_mapping():
    with pytest.raises(ValueError, match="nearest, area"):
        raster.axis_weights(np.arange(3), np.arange(3), "bilinear")


@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_time_map_lists_the_frames_to_compute(mapping):
    n, width = 7 * SR, 64  # 302 frames of hop 512 -> 64 columns
    frames, w = raster.time_map(n, HOP, width, mapping)
    assert w.shape == (width, len(frames)) and np.allclose(w.sum(1), 1.0)
    if mapping == "area":
        np.testing.assert_array_equal(frames, np.arange(1 + n // HOP))
    else:
        centers = (np.arange(width) + 0.5) * n / width
        np.testing.assert_array_equal(frames[w.argmax(1)], np.rint(centers / HOP).astype(int))
        assert len(frames) == width
    short_frames, _ = raster.time_map(N_FFT, HOP, width, mapping)  # 5 frames -> 64 columns: every frame shown
    np.testing.assert_array_equal(short_frames, np.arange(5))


@pytest.mark.parametrize("n_samples", [N_FFT, 3 * SR])  # fewer frames than columns, and more
@pytest.mark.parametrize("n_bins", [12, 20, 128])
def test_nearest_matrix_image_equals_mapping_then_colormap(n_samples, n_bins):
    frames, w = raster.time_map(n_samples, HOP, SIZE, "nearest")
    matrix01 = np.random.default_rng(n_bins).random((n_bins, len(frames)), dtype=np.float32)
    expected = raster.apply_colormap(raster.matrix_to_pixels(matrix01, w, SIZE, "nearest"), "coolwarm")
    np.testing.assert_array_equal(raster.matrix_image(matrix01, w, SIZE, "nearest", "coolwarm"), expected)


def test_frame_edges_cover_the_clip_and_center_each_frame_on_its_sample():
    edges = raster.frame_edges(n_frames=5, hop_length=100, n_samples=400)
    assert edges[0] == 0 and edges[-1] == 400
    np.testing.assert_allclose(edges[1:-1], [50, 150, 250, 350])


# ------------------------------------------------------------------ features equal librosa's own


def test_spectrogram_equals_librosa_stft():
    y = noise(1.0)
    ours = spectra.magnitude_spectrogram(y, N_FFT, HOP)
    ref = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4 * ref.max())


@pytest.mark.parametrize("n", [N_FFT, 3000, SR + 77])
def test_selected_frames_equal_those_columns_of_librosa_stft(n):
    y = noise(1.0)[:n] if n <= SR else np.concatenate([noise(1.0), noise(0.01, seed=1)])[:n]
    ref = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    frames = np.array(sorted({0, 1, 2, ref.shape[1] // 2, ref.shape[1] - 2, ref.shape[1] - 1}))  # both edges
    ours = spectra.magnitude_spectrogram(y, N_FFT, HOP, frames)
    np.testing.assert_allclose(ours, ref[:, frames], atol=1e-4 * ref.max())


def test_filterbank_blocks_equal_the_dense_product():
    y = chirp(d=0.5) + noise(0.5, amp=0.05)
    power = spectra.power_spectrogram(y, N_FFT, HOP)
    for basis in (librosa.filters.mel(sr=SR, n_fft=N_FFT), librosa.filters.chroma(sr=SR, n_fft=N_FFT)):
        ours = spectra.Filterbank(basis).apply(spectra.squared_spectra(y, N_FFT, HOP)).T
        ref = basis @ power
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


def librosa_feature(name, y, sr=SR):
    """librosa's own function for each feature of the table (what ours must equal), at the tests' settings."""
    from sklearn.preprocessing import scale

    kw = {"y": y, "sr": sr, "n_fft": N_FFT, "hop_length": HOP}
    mfcc = functools.partial(librosa.feature.mfcc, n_mfcc=N_MFCC, **kw)
    return {
        "spectral_centroid": lambda: librosa.feature.spectral_centroid(**kw)[0],
        "spectral_rolloff": lambda: librosa.feature.spectral_rolloff(**kw)[0],
        "mfcc": mfcc,
        "mfcc_scaled": lambda: scale(mfcc().astype(np.float64), axis=1),
        "chromagram": lambda: librosa.feature.chroma_stft(tuning=0.0, **kw),
        "melspectrogram": lambda: librosa.power_to_db(librosa.feature.melspectrogram(**kw), ref=np.max),
    }[name]()


# how close ours must be: MFCCs to 1 % of their range, chroma to 1e-3, the roll-off to one bin, the centroid to 0.1 %,
# the mel spectrogram to 0.01 dB
FEATURE_TOLERANCE = {"mfcc": lambda ref: 1e-2 * np.abs(ref).max(), "mfcc_scaled": lambda ref: 1e-3,
                     "chromagram": lambda ref: 1e-3, "spectral_centroid": lambda ref: 1e-3 * ref.max(),
                     "spectral_rolloff": lambda ref: SR / N_FFT + 1e-3, "melspectrogram": lambda ref: 1e-2}
FEATURES = [name for name, r in REPRESENTATIONS.items() if r.feature is not None]


def test_every_feature_of_the_table_has_a_librosa_reference():
    assert set(FEATURE_TOLERANCE) == set(FEATURES)
    for name in FEATURES:
        librosa_feature(name, tone(440.0, d=0.1))


@pytest.mark.parametrize("representation", FEATURES)
def test_features_equal_librosa(representation):
    y = chirp(d=1.0) + noise(1.0, amp=0.05)
    ours = get_representation(representation).feature(y, SR, ANALYSIS)
    ref = librosa_feature(representation, y)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=FEATURE_TOLERANCE[representation](ref))


@pytest.mark.parametrize("representation", FEATURES)
def test_features_of_selected_frames_are_those_columns(representation):
    y = chirp(d=1.0) + noise(1.0, amp=0.05)
    frames = np.array([0, 1, 7, 20, 42, 43])  # both edges; each feature is per frame
    if representation == "mfcc_scaled":
        return  # standardized over the frames computed, by design
    feature = get_representation(representation).feature
    np.testing.assert_allclose(feature(y, SR, ANALYSIS, frames), feature(y, SR, ANALYSIS)[..., frames], rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize("ref", [1.0, 1e3, np.max])
def test_power_to_db_is_librosas(ref):
    s = (np.random.default_rng(0).random((40, 128), dtype=np.float32) ** 8) * 1e4  # 100+ dB of range: some floored
    s[0, :3] = 0.0
    np.testing.assert_allclose(spectra.power_to_db(s, ref=ref), librosa.power_to_db(s, ref=ref), atol=1e-4)
    silent = np.zeros((4, 5), np.float32)
    np.testing.assert_array_equal(spectra.power_to_db(silent, ref=ref), librosa.power_to_db(silent, ref=ref))


def test_melspectrogram_is_in_db_below_its_maximum():
    m = spectra.melspectrogram(chirp(d=1.0), SR, ANALYSIS)
    assert m.shape == (128, 1 + SR // HOP) and m.dtype == np.float32
    assert m.max() == 0.0 and m.min() >= -80.0


def test_chroma_tuning_null_estimates_the_tuning_as_librosa_does():
    y = tone(452.0, d=1.0)  # a sharp A
    ours = spectra.chromagram(y, SR, spectra.Analysis(N_FFT, HOP, N_MFCC, chroma_tuning=None))
    ref = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_mfcc_scaled_is_per_coefficient_standardization():
    from sklearn.preprocessing import scale

    y = chirp(d=1.0)
    m, s = spectra.mfcc(y, SR, ANALYSIS), spectra.mfcc_scaled(y, SR, ANALYSIS)
    np.testing.assert_allclose(s, scale(m.astype(np.float64), axis=1), atol=1e-4)


def test_colormaps_are_the_tables_defaults(render_params):
    """params.yaml's render.colormaps names every matrix of the table with the table's default colormap."""
    assert render_params["colormaps"] == {r.name: r.colormap for r in of_kind("matrix")}


def test_style_colormaps_default_to_the_table_and_refuse_other_names(render_params):
    """A matrix params do not name takes the table's colormap (a store recorded before that representation
    existed stays readable); a name that is no matrix of the table (a typo) is refused."""
    def style_of(colormaps):
        return drawing.style_from_settings(RenderSettings.from_mapping({**render_params, "colormaps": colormaps}))

    style = style_of({"mfcc": "viridis"})
    assert style.colormaps == {r.name: "viridis" if r.name == "mfcc" else r.colormap for r in of_kind("matrix")}
    with pytest.raises(SettingsError, match=r"render.colormaps.mfc: unknown key \(did you mean render.colormaps.mfcc"):
        style_of({"mfc": "viridis"})
    with pytest.raises(SettingsError, match=r"render.colormaps.waveplot: unknown key \(allowed: mfcc, "):
        style_of({"waveplot": "viridis"})
    with pytest.raises(SettingsError, match=r'render.colormaps.chromagram: "nope" is not allowed \(a matplotlib'):
        style_of({"chromagram": "nope"})


@pytest.mark.parametrize("representation", [r.name for r in of_kind("matrix")])
def test_default_colormaps_are_what_librosa_specshow_would_pick(representation):
    """librosa.display.cmap's pick for the feature (coolwarm for data of both signs, magma otherwise), but the
    chromagram's: coolwarm, the authors' choice."""
    m = get_representation(representation).feature(chirp(d=1.0) + noise(1.0, amp=0.05), SR, ANALYSIS)
    expected = "coolwarm" if representation == "chromagram" else librosa.display.cmap(m).name
    assert get_representation(representation).colormap == expected


# ------------------------------------------------------------------------- what the image shows


@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
@pytest.mark.parametrize("representation", [r.name for r in of_kind("matrix")])
def test_matrix_images_correlate_with_the_librosa_matrix(representation, mapping, style):
    y = chirp(d=2.0) + noise(2.0, amp=0.02)
    image = draw(y, representation, style, mapping=mapping)
    ref = librosa_feature(representation, y)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    values = unmap(image, style.colormaps[representation])
    assert corr(values, nearest_resample(ref, len(y), SIZE)) > (0.99 if mapping == "nearest" else 0.9)


def test_a440_lights_the_a_row_of_the_chromagram(style):
    values = unmap(draw(tone(440.0), "chromagram", style, size=48), style.colormaps["chromagram"])
    # 12 pitch classes over 48 rows, C at the bottom: pitch class k covers rows [(11 - k) * 4, (12 - k) * 4)
    band_means = [values[(11 - k) * 4 : (12 - k) * 4].mean() for k in range(12)]
    assert int(np.argmax(band_means)) == 9  # C C# D D# E F F# G G# A
    assert band_means[9] > 0.9 and np.median(band_means) < 0.5


@pytest.mark.parametrize("recipe", drawing.RECIPES)
@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_melspectrogram_shows_the_lowest_band_at_the_bottom(mapping, recipe, style):
    """A low tone then a high one: the loudest rows of the left half sit low, those of the right half high."""
    y = np.concatenate([tone(200.0, d=1.0), tone(4000.0, d=1.0)])
    image = draw(y, "melspectrogram", style, mapping=mapping, recipe=recipe)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    if recipe == "pymaivar":  # the plot area of the authors' figure, inside its white border
        image = pymaivar_plot_area(y, "melspectrogram", size=SIZE, sr=SR)
    values = unmap(image, "magma")  # both recipes: magma (the table's default; specshow's pick for dB <= 0)
    low, high = values[:, : SIZE // 2 - 4].mean(1), values[:, SIZE // 2 + 4 :].mean(1)
    assert np.argmax(low) > np.argmax(high) + SIZE // 4  # rows count from the top


def test_rising_chirp_gives_a_rising_centroid_curve(style):
    image = draw(chirp(), "spectral_centroid", style)
    rows = curve_rows(image, raster.hex_rgb(style.curve))
    assert np.isfinite(rows).all(), "the curve must reach every column (full width)"
    height = 1.0 - rows / (SIZE - 1)
    assert height[-8:].mean() - height[:8].mean() > 0.7
    assert np.corrcoef(np.arange(SIZE), height)[0, 1] > 0.95


@pytest.mark.parametrize("representation", [r.name for r in of_kind("curve")])
@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_curves_follow_librosa_and_are_time_aligned(representation, mapping, style):
    # low tone in the first half, high tone in the second: the step must sit at the middle column.
    y = np.concatenate([tone(300.0, d=1.0), tone(5000.0, d=1.0)]) + noise(2.0, amp=1e-4)
    image = draw(y, representation, style, mapping=mapping)
    height = 1.0 - curve_rows(image, raster.hex_rgb(style.curve)) / (SIZE - 1)
    ref = librosa_feature(representation, y)
    centers = (np.arange(SIZE) + 0.5) * len(y) / SIZE
    ref_cols = ref[np.clip(np.rint(centers / HOP).astype(int), 0, len(ref) - 1)]
    assert corr(height, ref_cols) > 0.9
    step = int(np.argmax(height > 0.5))
    assert abs(step - SIZE // 2) <= 2


def test_waveplot_envelope_follows_the_amplitude(style):
    ramp = np.linspace(0.0, 1.0, len(seconds(2.0)), dtype=np.float32)
    y = ramp * noise(2.0, amp=0.3)
    image = draw(y, "waveplot", style)
    drawn = (image == raster.hex_rgb(style.waveform).astype(np.uint8)).all(-1)
    heights = drawn.sum(0) / SIZE
    env = np.array([np.abs(c).max() for c in np.array_split(y, SIZE)])
    assert corr(heights, env / env.max()) > 0.95
    assert drawn.sum(0).max() == SIZE, "the loudest column reaches top and bottom (full-bleed)"
    assert (drawn == drawn[::-1]).all(), "the envelope is symmetric about the center line"


@pytest.mark.parametrize("representation", ["mfcc", "mfcc_scaled"])
@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_click_train_shows_as_vertical_structure_in_the_mfcc_image(representation, mapping, style):
    y, positions = clicks()
    values = unmap(draw(y, representation, style, mapping=mapping), style.colormaps[representation])
    deviation = np.abs(values - np.median(values, axis=1, keepdims=True))  # from each row's typical value
    click_cols = (positions * SIZE / len(y)).astype(int)
    far_cols = click_cols + 4  # half-way between clicks (8 columns apart)
    # across the whole image, the columns at the clicks stand out ...
    column_dev = deviation.mean(0)
    assert column_dev[click_cols].mean() > 3 * column_dev[far_cols].mean()
    # ... and the change at a click spans most coefficient rows: a vertical stripe, not a horizontal feature
    per_row_click = deviation[:, click_cols].mean(1)
    per_row_far = deviation[:, far_cols].mean(1)
    assert (per_row_click > 2 * per_row_far + 1 / 255).mean() > 0.5


# ---------------------------------------------------------------------------------- degenerate audio


@pytest.mark.parametrize("recipe", drawing.RECIPES)
@pytest.mark.parametrize("representation", NAMES)
@pytest.mark.parametrize("case", ["silence", "short", "non_finite", "single_sample"])
@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_degenerate_audio_gives_a_valid_image(representation, case, mapping, recipe, style):
    y = {
        "silence": np.zeros(SR, np.float32),
        "short": tone(440.0, d=0.01),  # 220 samples < n_fft
        "non_finite": np.where(np.arange(SR) % 97 == 0, np.nan, tone(440.0, d=1.0)).astype(np.float32),
        "single_sample": np.ones(1, np.float32),
    }[case]
    if case == "non_finite":
        y[5] = np.inf
        y[7] = -np.inf
    image = draw(y, representation, style, mapping=mapping, recipe=recipe)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("recipe", drawing.RECIPES)
@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_non_finite_samples_render_as_zeros(mapping, recipe, style):
    y = tone(440.0, d=1.0)
    bad = y.copy()
    bad[::101] = np.nan
    zeroed = y.copy()
    zeroed[::101] = 0.0
    for representation in NAMES:
        np.testing.assert_array_equal(draw(bad, representation, style, mapping=mapping, recipe=recipe),
                                      draw(zeroed, representation, style, mapping=mapping, recipe=recipe))


def test_clean_audio_pads_short_audio_and_counts_non_finite():
    y, n_bad = wav.clean_audio(np.array([np.nan, 1.0, np.inf], np.float32), n_fft=8)
    assert n_bad == 2 and len(y) == 8 and np.isfinite(y).all()


@pytest.mark.parametrize("recipe", drawing.RECIPES)
@pytest.mark.parametrize("mapping", raster.PIXEL_MAPPINGS)
def test_render_is_deterministic(mapping, recipe, style):
    y = chirp(d=1.0) + noise(1.0)
    for representation in NAMES:
        np.testing.assert_array_equal(draw(y, representation, style, mapping=mapping, recipe=recipe),
                                      draw(y, representation, style, mapping=mapping, recipe=recipe))


def test_unknown_representation_is_a_one_line_error_listing_the_table(style):
    with pytest.raises(PipelineError) as err:
        draw(tone(440.0, d=0.5), "spectrogram", style)
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in NAMES)


# ------------------------------------------------------------- recipe "pymaivar": the authors' drawing

AUTHORS_SR = 44100  # the rate of the authors' WAVs: their curve times (at 22050 Hz) then cover half the clip
AUTHORS_SIZE = 128


def authors_clip(d=3.0, seed=0):
    """A few seconds at 44.1 kHz with something to show in every representation: a rising chirp under a slowly
    pulsing loudness (the waveform's shape), a burst of 9 kHz (a step in the curves), a little noise."""
    t = np.arange(int(d * AUTHORS_SR)) / AUTHORS_SR
    f0, f1 = 300.0, 5000.0
    loud = 0.15 + 0.35 * (0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t))
    y = loud * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * d) * t**2))
    y += 0.02 * np.random.default_rng(seed).standard_normal(len(t))
    burst = slice(int(0.4 * d * AUTHORS_SR), int(0.5 * d * AUTHORS_SR))
    y[burst] += 0.3 * np.sin(2 * np.pi * 9000.0 * t[burst])
    return y.astype(np.float32)


def authors_drawing(x, sr, representation, size=None, *, inches=None, full_bleed=True):
    """PyMAiVAR's code for one representation, run with librosa 0.11 plus librosa 0.8's reflect-padded STFT
    (``pad_mode='reflect'``, the 0.8 default), drawn by matplotlib (Agg) at 72 dpi, the notebooks' resolution
    (a point is a pixel): the axes filling a ``size x size`` canvas (``full_bleed``), or the notebooks' figure of
    ``inches`` with matplotlib's default subplot margins (``full_bleed=False``). RGB uint8.

    ``waveplot`` was removed in librosa 0.10: ``waveshow`` stands in, given what waveplot did for a long clip
    (an envelope of ``sr // 1000``-sample frames, x-limits set to its points; waveshow's would add margins).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.preprocessing import minmax_scale, scale

    dpi = 72
    fig = Figure(figsize=(size / dpi, size / dpi) if full_bleed else inches, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1]) if full_bleed else fig.add_subplot(111)
    hop = sr // min(1000, sr * len(x) // 50000) if len(x) > 50000 else 1
    reflect = {"pad_mode": "reflect"}  # librosa 0.8's STFT padding (0.10 made it "constant", zeros)

    def waveplot(**kwargs):
        librosa.display.waveshow(x, sr=sr, ax=ax, max_points=len(x) // hop, **kwargs)
        ax.set_xlim(0, (len(x) // hop - 1) * hop / sr)

    if representation == "waveplot":
        waveplot()
    elif representation in ("spectral_centroid", "spectral_rolloff"):
        if representation == "spectral_centroid":
            feature = librosa.feature.spectral_centroid(y=x, sr=sr, **reflect)[0]
        else:
            feature = librosa.feature.spectral_rolloff(y=x + 0.01, sr=sr, **reflect)[0]
        t = librosa.frames_to_time(range(len(feature)))  # at librosa's default 22050 Hz, as they wrote it
        waveplot(alpha=0.4)
        ax.plot(t, minmax_scale(feature), color="r")
    elif representation in ("mfcc", "mfcc_scaled"):
        mfccs = librosa.feature.mfcc(y=x, sr=sr, **reflect)
        if representation == "mfcc_scaled":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn warns about float32 rounding in the centered rows
                mfccs = scale(mfccs, axis=1)
        librosa.display.specshow(mfccs, sr=sr, x_axis="time", ax=ax)
    elif representation == "chromagram":
        chromagram = librosa.feature.chroma_stft(y=x, sr=sr, hop_length=512, **reflect)
        librosa.display.specshow(chromagram, x_axis="time", y_axis="chroma", hop_length=512, cmap="coolwarm", ax=ax)
    else:  # ours, drawn as they drew a matrix without a frequency axis (the MFCCs): equal rows per band
        mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=sr, **reflect), ref=np.max)
        librosa.display.specshow(mel_db, sr=sr, x_axis="time", ax=ax)
    ax.axis("off")
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    assert image.shape[:2] == ((size, size) if full_bleed else (round(inches[1] * dpi), round(inches[0] * dpi)))
    return image


def authors_image(x, sr, representation, size, inches=(5.0, 5.0)):
    """What the authors' classifier read: their notebook's PNG (RGBA, loaded as RGB) resized to ``size`` by
    torchvision's ``Resize`` on a PIL image (PIL's bilinear)."""
    from PIL import Image

    figure = authors_drawing(x, sr, representation, inches=inches, full_bleed=False)
    return np.asarray(Image.fromarray(figure).resize((size, size), Image.BILINEAR))


def red_rows(image):
    """Mean row of each column's red pixels (the curve, antialiased edges included when mostly red); NaN where
    the column has none."""
    red = (image[..., 0] > 150) & (image[..., 1] < 120) & (image[..., 2] < 120)
    rows = np.arange(image.shape[0])[:, None]
    with np.errstate(invalid="ignore"):
        return (red * rows).sum(0) / red.sum(0)


def draw_pymaivar(y, representation, style, size=AUTHORS_SIZE, sr=AUTHORS_SR, mapping="nearest"):
    return draw(y, representation, style, size=size, sr=sr, mapping=mapping, recipe="pymaivar")


def pymaivar_plot_area(y, representation, size=AUTHORS_SIZE, sr=AUTHORS_SR):
    return pymaivar.plot_area(y, sr, representation, height=size, width=size, pixel_mapping="nearest")


# The recipe's whole image against their notebook's, resized as their loader resized it (docs/PAPER.md records
# these figures, measured on authors_clip: 0.98 or more at 224 and 299, 5 x 5 and 14 x 5 inches).
@pytest.mark.parametrize("representation", NAMES)
def test_pymaivar_draws_what_the_authors_notebook_drew(representation, style):
    x = authors_clip()
    ref = authors_image(x, AUTHORS_SR, representation, 224)
    ours = draw_pymaivar(x, representation, style, size=224)
    assert ours.shape == ref.shape == (224, 224, 3)
    assert corr(ours, ref) >= 0.95
    # the white border is the figure's: the same rows and columns are white (all but Agg's antialiased edge)
    white_ours, white_ref = (ours == 255).all(-1), (ref == 255).all(-1)
    assert (white_ours == white_ref).mean() > 0.97
    border = np.ones((224, 224), dtype=bool)
    border[25:201, 26:203] = False  # the plot area (rows 43..320, columns 45..324 of 360, scaled) and 2 pixels
    assert white_ref[border].mean() > 0.99 and white_ours[border].mean() > 0.99


def test_pymaivar_figure_size_is_a_parameter(style):
    """core.py's 14 x 5 inch figure: another border (the plot area spans 126..907 of 1008 columns), the same
    agreement with matplotlib."""
    x = authors_clip(d=1.5)
    wide = dataclasses.replace(style, figure_inches=(14.0, 5.0))
    ours = draw(x, "mfcc", wide, size=96, sr=AUTHORS_SR, recipe="pymaivar")
    assert corr(ours, authors_image(x, AUTHORS_SR, "mfcc", 96, inches=(14.0, 5.0))) >= 0.95
    assert not np.array_equal(ours, draw_pymaivar(x, "mfcc", style, size=96))
    assert pymaivar.figure_box(*pymaivar.figure_pixels((14.0, 5.0))) == (43, 320, 126, 907)
    assert pymaivar.figure_box(*pymaivar.figure_pixels((5.0, 5.0))) == (43, 320, 45, 324)


@pytest.mark.parametrize("representation", ["mfcc", "spectral_centroid"])
def test_pymaivar_stft_frames_are_reflect_padded_as_librosa_0_8s(representation):
    """librosa 0.8 padded the STFT by reflection; 0.10 and later pad with zeros by default."""
    x = authors_clip(d=1.0)
    rep = get_representation(representation)
    ours = pymaivar.authors_feature(rep, x, AUTHORS_SR)
    fn = {"mfcc": librosa.feature.mfcc, "spectral_centroid": librosa.feature.spectral_centroid}[representation]
    reflect, zeros = fn(y=x, sr=AUTHORS_SR, pad_mode="reflect"), fn(y=x, sr=AUTHORS_SR)
    reflect, zeros = np.atleast_2d(reflect), np.atleast_2d(zeros)
    ours = np.atleast_2d(ours)
    assert ours.shape == reflect.shape
    scale_ = np.abs(reflect).max()
    assert np.abs(ours - reflect).max() <= 1e-3 * scale_
    assert np.abs(ours[:, 0] - zeros[:, 0]).max() > 1e-2 * scale_  # the first frame differs from zero padding


@pytest.mark.parametrize("representation", NAMES)
def test_pymaivar_plot_area_is_what_matplotlib_draws_in_the_axes(representation, style):
    """The plot area alone, full-bleed, against matplotlib's axes at 72 dpi: pixel for pixel but for the edges
    Agg antialiases."""
    x = authors_clip()
    ref = authors_drawing(x, AUTHORS_SR, representation, AUTHORS_SIZE)
    ours = pymaivar_plot_area(x, representation)
    same = (ours == ref).all(-1).mean()
    if get_representation(representation).kind == "matrix":
        # the same matrices, the same colormap entries (matplotlib's floor(v * 256)), the cell under each pixel's
        # center as Agg fills specshow's quads: pixel for pixel
        assert same > 0.99
        return
    # Agg antialiases the edges of the waveform and of the curve, we draw whole pixels: those differ, nothing else
    assert corr(ours, ref) > (0.97 if representation == "waveplot" else 0.94)
    assert same > (0.95 if representation == "waveplot" else 0.8)
    if representation == "waveplot":
        return
    ours_rows, ref_rows = red_rows(ours), red_rows(ref)
    both = np.isfinite(ours_rows) & np.isfinite(ref_rows)
    assert both.mean() > 0.9  # the same columns carry the curve
    off = np.abs(ours_rows - ref_rows)[both]
    assert off.max() <= 1.5 and (off <= 1.0).mean() > 0.95


def test_pymaivar_centroid_shows_the_first_half_of_the_clip_and_corrected_the_whole(style):
    # low, high, low, high: the first half is one step up, the whole clip two; the two curves are uncorrelated
    quarter = int(0.75 * AUTHORS_SR)
    t = np.arange(quarter) / AUTHORS_SR
    low, high = np.sin(2 * np.pi * 400.0 * t), np.sin(2 * np.pi * 4000.0 * t)
    y = (0.5 * np.concatenate([low, high, low, high])).astype(np.float32)
    truth = librosa.feature.spectral_centroid(y=y, sr=AUTHORS_SR)[0]
    centers = (np.arange(AUTHORS_SIZE) + 0.5) / AUTHORS_SIZE * len(y)  # each column's center, in samples

    def truth_at(samples):
        return truth[np.clip(np.rint(samples / HOP).astype(int), 0, len(truth) - 1)]

    whole, first_half = truth_at(centers), truth_at(centers / 2)
    assert abs(corr(whole, first_half)) < 0.2
    for recipe, follows, ignores in (("pymaivar", first_half, whole), ("corrected", whole, first_half)):
        image = (pymaivar_plot_area(y, "spectral_centroid") if recipe == "pymaivar"
                 else draw(y, "spectral_centroid", style, size=AUTHORS_SIZE, sr=AUTHORS_SR, recipe=recipe))
        height = -red_rows(image)
        assert np.isfinite(height).all(), recipe
        assert corr(height, follows) > 0.9, recipe
        assert abs(corr(height, ignores)) < 0.3, recipe
    # and the pymaivar curve (0..1) sits on the waveform's axis (+-0.5 peak): 0 at the center line, so the curve
    # stays in the upper part; the limits are matplotlib's for data in [-0.5, 1]
    rows = red_rows(pymaivar_plot_area(y, "spectral_centroid"))
    bottom, top = -0.5 - 0.075, 1.0 + 0.075
    zero_row = top / (top - bottom) * AUTHORS_SIZE
    assert rows.max() < zero_row + 1 and rows.min() > (top - 1.0) / (top - bottom) * AUTHORS_SIZE - 2


def test_pymaivar_ignores_the_style_and_analysis_params(style, render_params):
    """The authors' choices are fixed: other colors, colormaps, tuning or FFT sizes in params change nothing."""
    other = drawing.style_from_settings(RenderSettings.from_mapping({
        **render_params, "colors": {"waveform": "#000000", "curve": "#00ff00", "background": "#123456"},
        "colormaps": {r.name: "gray" for r in of_kind("matrix")}, "faded_alpha": 0.9, "line_width": 5}))
    x = authors_clip(d=1.5)
    for representation in NAMES:
        a = drawing.render(x, AUTHORS_SR, representation, size=48, n_fft=N_FFT, hop_length=HOP, n_mfcc=N_MFCC,
                      chroma_tuning=0.0, style=style, pixel_mapping="nearest", recipe="pymaivar")
        b = drawing.render(x, AUTHORS_SR, representation, size=48, n_fft=1024, hop_length=256, n_mfcc=13,
                      chroma_tuning=0.3, style=other, pixel_mapping="nearest", recipe="pymaivar")
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data, expected", [
    (np.array([[-3.0, 1.0], [2.0, 5.0]]), "coolwarm"),
    (np.abs(np.random.default_rng(0).standard_normal((20, 50))), "magma"),
    (-np.abs(np.random.default_rng(1).standard_normal((20, 50))), "magma"),
    (np.concatenate([np.full(99, -1.0), [5.0]]), "magma"),  # the top 2 % do not count (robust)
])
def test_specshow_cmap_is_the_one_librosa_picks(data, expected):
    assert pymaivar.specshow_cmap(data) == expected == librosa.display.cmap(data).name


@pytest.mark.parametrize("representation", ["mfcc", "mfcc_scaled"])
def test_pymaivar_mfcc_colormap_is_picked_per_clip_as_specshow_does(representation, style):
    """MFCCs have both signs: coolwarm (the test above); a silent clip's are <= 0: magma, as the authors drew it."""
    silence = np.zeros(AUTHORS_SR, np.float32)
    ours = pymaivar_plot_area(silence, representation, size=32)
    assert {tuple(c) for c in ours.reshape(-1, 3)} <= {tuple(c) for c in raster.colormap_lut("magma")}
    np.testing.assert_array_equal(ours, authors_drawing(silence, AUTHORS_SR, representation, 32))


@pytest.mark.parametrize("lo, hi", [(-0.3, 1.0), (-1.2, 1.2), (-0.5, 0.5), (0.0, 0.0)])
def test_autoscaled_limits_are_matplotlibs(lo, hi):
    from matplotlib.figure import Figure

    ax = Figure().add_axes([0, 0, 1, 1])
    ax.plot([0, 1], [lo, hi])
    np.testing.assert_allclose(pymaivar.autoscaled_limits(lo, hi), ax.get_ylim())


def test_polyline_columns_keep_every_vertex_and_thicken_steep_segments():
    # 4 points per column over columns 0-1, a jump up (row 10 -> 2) across the edge of columns 3 and 4, the last
    # point in column 5
    x = np.array([0.1, 0.3, 0.6, 0.9, 1.1, 1.3, 1.6, 1.9, 3.9, 4.1, 5.5])
    rows = np.array([10, 12, 30, 10, 10, 10, 10, 10, 10, 2, 2], dtype=np.float64)
    first, last = pymaivar.polyline_columns(x, rows, size=8, half_width=0.5)
    assert (first[0], last[0]) == (10, 30)  # the peak at row 30 between two points of the same column
    assert (first[1], last[1]) == (10, 10)  # a flat stretch: one row (a line 1 pixel thick)
    assert (first[3], last[3], first[4], last[4]) == (6, 10, 2, 6)  # 1 pixel thick, each column shows its half
    assert np.isinf(first[6:]).all() and np.isinf(last[6:]).all()  # past the last point: no line
    first, last = pymaivar.polyline_columns(x, rows, size=8, half_width=1.0)
    assert (first[2], last[2]) == (9, 11)  # 2 pixels thick: the rows within 1 of the line
    assert (first[3], last[3]) == (first[4], last[4]) == (1, 11)  # the whole jump in both columns, as a 2-pixel pen


def test_waveplot_envelope_is_librosa_0_8s():
    x = authors_clip(d=2.0)
    env, hop = pymaivar.waveplot_envelope(x, AUTHORS_SR)  # 88,200 samples > 50,000: 1000 points a second, hop 44
    assert hop == 44 and len(env) == len(x) // 44
    np.testing.assert_array_equal(env[:3], [np.abs(x[i * 44 : (i + 1) * 44]).max() for i in range(3)])
    short = x[:40000]
    env, hop = pymaivar.waveplot_envelope(short, AUTHORS_SR)
    assert hop == 1
    np.testing.assert_array_equal(env, np.abs(short))  # every sample


def test_unknown_recipe_is_a_one_line_error(style):
    with pytest.raises(ValueError, match="recipe must be one of corrected, pymaivar, not 'matplotlib'"):
        draw(tone(440.0, d=0.5), "mfcc", style, recipe="matplotlib")


# ------------------------------------------------------------------------------------------ loading


def test_load_audio_mixes_down_and_resamples(tmp_path):
    left = tone(440.0, d=0.5)
    stereo = np.stack([left, -left], axis=1)  # opposite channels cancel in the mixdown
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, SR, subtype="PCM_16")
    y, n_bad = wav.load_audio(str(path), 44100)
    assert n_bad == 0 and abs(len(y) - 2 * len(left)) <= 2
    assert np.abs(y).max() < 1e-3

    sf.write(tmp_path / "mono.wav", left, SR, subtype="PCM_16")
    y, _ = wav.load_audio(str(tmp_path / "mono.wav"), 44100)
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 44100 / len(y) - 440.0) < 5  # the tone survives resampling


def test_load_audio_counts_and_replaces_non_finite_float_samples(tmp_path):
    y = tone(440.0, d=0.2)
    y[10] = np.nan
    y[20] = np.inf
    sf.write(tmp_path / "float.wav", y, SR, subtype="FLOAT")
    out, n_bad = wav.load_audio(str(tmp_path / "float.wav"), SR)
    assert n_bad == 2 and np.isfinite(out).all() and out[10] == 0.0


def test_read_audio_keeps_the_native_rate(tmp_path):
    left = tone(440.0, d=0.5)
    sf.write(tmp_path / "stereo.wav", np.stack([left, 0.5 * left], axis=1), SR, subtype="FLOAT")
    y, rate, n_bad = wav.read_audio(str(tmp_path / "stereo.wav"))
    assert rate == SR and n_bad == 0 and len(y) == len(left)
    np.testing.assert_allclose(y, 0.75 * left, atol=1e-6)  # the channel mean, as librosa.load(mono=True)
    ref, ref_sr = librosa.load(tmp_path / "stereo.wav", sr=None)
    assert ref_sr == rate
    np.testing.assert_allclose(y, ref, atol=1e-6)


@pytest.mark.parametrize("case, reason", [("missing", "missing_file"), ("empty", "empty_file"),
                                          ("garbage", "unreadable_audio")])
def test_load_audio_bad_files_raise_with_a_reason(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"RIFF\x00\x00this is not a wav file" * 10)
    with pytest.raises(ClipFailure) as err:
        wav.load_audio(str(path), SR)
    assert err.value.reason == reason
