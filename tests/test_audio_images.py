"""Faithfulness of the six audio images: what the pixels must show for audio with known content."""

from __future__ import annotations

import librosa
import librosa.display
import numpy as np
import pytest
import soundfile as sf

from maivar.audio import images as ai
from maivar.audio.images import REPRESENTATIONS
from maivar.core.errors import PipelineError
from maivar.core.params import load_params
from maivar.core.rejections import ClipFailure

SR = 22050  # a lower rate than the default keeps the tests fast; the mapping uses the actual rate
SIZE = 64
N_FFT, HOP, N_MFCC = 2048, 512, 20


@pytest.fixture(scope="module")
def render_params():
    return load_params()["render"]


@pytest.fixture(scope="module")
def style(render_params):
    return ai.style_from_params(render_params)


def draw(y, representation, style, size=SIZE, sr=SR, tuning=0.0, mapping="nearest"):
    return ai.render(np.asarray(y, dtype=np.float32), sr, representation, size=size, n_fft=N_FFT, hop_length=HOP,
                     n_mfcc=N_MFCC, chroma_tuning=tuning, style=style, pixel_mapping=mapping)


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
    lut = ai.colormap_lut(cmap_name).astype(np.int32)
    d = ((image[..., None, :].astype(np.int32) - lut[None, None]) ** 2).sum(-1)
    return d.argmin(-1) / 255.0


def nearest_resample(matrix, n_samples, size):
    """An independent, naive downsampling of a librosa matrix: nearest frame to each column's centre time,
    the bin under each row's centre (bin 0 at the bottom)."""
    centres = (np.arange(size) + 0.5) * n_samples / size
    frames = np.clip(np.rint(centres / HOP).astype(int), 0, matrix.shape[1] - 1)
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
    w = ai.overlap_weights(np.arange(9), np.linspace(0, 8, 5))  # 8 cells -> 4 pixels
    np.testing.assert_allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(w @ np.arange(8.0), [0.5, 2.5, 4.5, 6.5])
    up = ai.overlap_weights(np.arange(3), np.linspace(0, 2, 7))  # 2 cells -> 6 pixels: each repeated
    np.testing.assert_allclose(up @ np.array([1.0, 5.0]), [1, 1, 1, 5, 5, 5])


def test_nearest_weights_pick_the_cell_under_each_pixel_centre():
    w = ai.nearest_weights(np.arange(9), np.linspace(0, 8, 5))  # 8 cells -> 4 pixels: centres 1, 3, 5, 7
    np.testing.assert_array_equal(w @ np.arange(8.0), [1, 3, 5, 7])  # a centre on a boundary: the later cell
    assert set(np.unique(w)) == {0.0, 1.0} and (w.sum(1) == 1).all()
    up = ai.nearest_weights(np.arange(3), np.linspace(0, 2, 7))  # 2 cells -> 6 pixels: each repeated
    np.testing.assert_array_equal(up @ np.array([1.0, 5.0]), [1, 1, 1, 5, 5, 5])


def test_axis_weights_rejects_an_unknown_mapping():
    with pytest.raises(ValueError, match="nearest, area"):
        ai.axis_weights(np.arange(3), np.arange(3), "bilinear")


@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
def test_time_map_lists_the_frames_to_compute(mapping):
    n, width = 7 * SR, 64  # 302 frames of hop 512 -> 64 columns
    frames, w = ai.time_map(n, HOP, width, mapping)
    assert w.shape == (width, len(frames)) and np.allclose(w.sum(1), 1.0)
    if mapping == "area":
        np.testing.assert_array_equal(frames, np.arange(1 + n // HOP))
    else:
        centres = (np.arange(width) + 0.5) * n / width
        np.testing.assert_array_equal(frames[w.argmax(1)], np.rint(centres / HOP).astype(int))
        assert len(frames) == width
    short_frames, _ = ai.time_map(N_FFT, HOP, width, mapping)  # 5 frames -> 64 columns: every frame shown
    np.testing.assert_array_equal(short_frames, np.arange(5))


@pytest.mark.parametrize("n_samples", [N_FFT, 3 * SR])  # fewer frames than columns, and more
@pytest.mark.parametrize("n_bins", [12, 20, 128])
def test_nearest_matrix_image_equals_mapping_then_colormap(n_samples, n_bins):
    frames, w = ai.time_map(n_samples, HOP, SIZE, "nearest")
    matrix01 = np.random.default_rng(n_bins).random((n_bins, len(frames)), dtype=np.float32)
    expected = ai.apply_colormap(ai.matrix_to_pixels(matrix01, w, SIZE, "nearest"), "coolwarm")
    np.testing.assert_array_equal(ai.matrix_image(matrix01, w, SIZE, "nearest", "coolwarm"), expected)


def test_frame_edges_cover_the_clip_and_centre_each_frame_on_its_sample():
    edges = ai.frame_edges(n_frames=5, hop_length=100, n_samples=400)
    assert edges[0] == 0 and edges[-1] == 400
    np.testing.assert_allclose(edges[1:-1], [50, 150, 250, 350])


# ------------------------------------------------------------------ features equal librosa's own


def test_spectrogram_equals_librosa_stft():
    y = noise(1.0)
    ours = ai.magnitude_spectrogram(y, N_FFT, HOP)
    ref = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4 * ref.max())


@pytest.mark.parametrize("n", [N_FFT, 3000, SR + 77])
def test_selected_frames_equal_those_columns_of_librosa_stft(n):
    y = noise(1.0)[:n] if n <= SR else np.concatenate([noise(1.0), noise(0.01, seed=1)])[:n]
    ref = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    frames = np.array(sorted({0, 1, 2, ref.shape[1] // 2, ref.shape[1] - 2, ref.shape[1] - 1}))  # both edges
    ours = ai.magnitude_spectrogram(y, N_FFT, HOP, frames)
    np.testing.assert_allclose(ours, ref[:, frames], atol=1e-4 * ref.max())


def test_filterbank_blocks_equal_the_dense_product():
    y = chirp(d=0.5) + noise(0.5, amp=0.05)
    power = ai.power_spectrogram(y, N_FFT, HOP)
    for basis in (librosa.filters.mel(sr=SR, n_fft=N_FFT), librosa.filters.chroma(sr=SR, n_fft=N_FFT)):
        ours = ai.Filterbank(basis).apply(ai.squared_spectra(y, N_FFT, HOP)).T
        ref = basis @ power
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


@pytest.mark.parametrize("representation", ["mfcc", "chromagram"])
def test_feature_matrices_equal_librosa(representation):
    y = chirp(d=1.0) + noise(1.0, amp=0.05)
    ours = ai.feature_matrix(y, SR, representation, n_fft=N_FFT, hop_length=HOP, n_mfcc=N_MFCC, chroma_tuning=0.0)
    if representation == "mfcc":
        ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=N_MFCC, n_fft=N_FFT, hop_length=HOP)
        np.testing.assert_allclose(ours, ref, atol=1e-2 * np.abs(ref).max())
    else:
        ref = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, tuning=0.0)
        np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_chroma_tuning_null_estimates_the_tuning_as_librosa_does():
    y = tone(452.0, d=1.0)  # a sharp A
    ours = ai.feature_matrix(y, SR, "chromagram", n_fft=N_FFT, hop_length=HOP, n_mfcc=N_MFCC, chroma_tuning=None)
    ref = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_mfcc_scaled_is_per_coefficient_standardisation():
    from sklearn.preprocessing import scale

    y = chirp(d=1.0)
    m = ai.feature_matrix(y, SR, "mfcc", n_fft=N_FFT, hop_length=HOP, n_mfcc=N_MFCC, chroma_tuning=0.0)
    s = ai.feature_matrix(y, SR, "mfcc_scaled", n_fft=N_FFT, hop_length=HOP, n_mfcc=N_MFCC, chroma_tuning=0.0)
    np.testing.assert_allclose(s, scale(m.astype(np.float64), axis=1), atol=1e-4)


@pytest.mark.parametrize("representation", ["spectral_centroid", "spectral_rolloff"])
def test_curves_equal_librosa(representation):
    y = chirp(d=1.0) + noise(1.0, amp=0.05)
    ours = ai.feature_curve(y, SR, representation, n_fft=N_FFT, hop_length=HOP)
    fn = getattr(librosa.feature, representation)
    ref = fn(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)[0]
    tol = 1e-3 * ref.max() if representation == "spectral_centroid" else SR / N_FFT + 1e-3  # rolloff: one bin
    np.testing.assert_allclose(ours, ref, atol=tol)


def test_mfcc_colormap_param_is_what_librosa_specshow_would_pick(render_params):
    m = librosa.feature.mfcc(y=chirp(d=1.0) + noise(1.0, amp=0.05), sr=SR, n_mfcc=N_MFCC)
    assert librosa.display.cmap(m).name == render_params["colormaps"]["mfcc"]
    assert render_params["colormaps"]["chromagram"] == "coolwarm"  # the authors' choice


# ------------------------------------------------------------------------- what the image shows


@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
@pytest.mark.parametrize("representation", ["mfcc", "mfcc_scaled", "chromagram"])
def test_matrix_images_correlate_with_the_librosa_matrix(representation, mapping, style):
    y = chirp(d=2.0) + noise(2.0, amp=0.02)
    image = draw(y, representation, style, mapping=mapping)
    if representation == "chromagram":
        ref = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, tuning=0.0)
    else:
        ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=N_MFCC, n_fft=N_FFT, hop_length=HOP)
        if representation == "mfcc_scaled":
            ref = (ref - ref.mean(1, keepdims=True)) / ref.std(1, keepdims=True)
    values = unmap(image, style.colormaps[representation])
    assert corr(values, nearest_resample(ref, len(y), SIZE)) > (0.99 if mapping == "nearest" else 0.9)


def test_a440_lights_the_a_row_of_the_chromagram(style):
    values = unmap(draw(tone(440.0), "chromagram", style, size=48), style.colormaps["chromagram"])
    # 12 pitch classes over 48 rows, C at the bottom: pitch class k covers rows [(11 - k) * 4, (12 - k) * 4)
    band_means = [values[(11 - k) * 4 : (12 - k) * 4].mean() for k in range(12)]
    assert int(np.argmax(band_means)) == 9  # C C# D D# E F F# G G# A
    assert band_means[9] > 0.9 and np.median(band_means) < 0.5


def test_rising_chirp_gives_a_rising_centroid_curve(style):
    image = draw(chirp(), "spectral_centroid", style)
    rows = curve_rows(image, ai.hex_rgb(style.curve))
    assert np.isfinite(rows).all(), "the curve must reach every column (full width)"
    height = 1.0 - rows / (SIZE - 1)
    assert height[-8:].mean() - height[:8].mean() > 0.7
    assert np.corrcoef(np.arange(SIZE), height)[0, 1] > 0.95


@pytest.mark.parametrize("representation", ["spectral_centroid", "spectral_rolloff"])
@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
def test_curves_follow_librosa_and_are_time_aligned(representation, mapping, style):
    # low tone in the first half, high tone in the second: the step must sit at the middle column.
    y = np.concatenate([tone(300.0, d=1.0), tone(5000.0, d=1.0)]) + noise(2.0, amp=1e-4)
    image = draw(y, representation, style, mapping=mapping)
    height = 1.0 - curve_rows(image, ai.hex_rgb(style.curve)) / (SIZE - 1)
    fn = getattr(librosa.feature, representation)
    ref = fn(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP)[0]
    centres = (np.arange(SIZE) + 0.5) * len(y) / SIZE
    ref_cols = ref[np.clip(np.rint(centres / HOP).astype(int), 0, len(ref) - 1)]
    assert corr(height, ref_cols) > 0.9
    step = int(np.argmax(height > 0.5))
    assert abs(step - SIZE // 2) <= 2


def test_waveplot_envelope_follows_the_amplitude(style):
    ramp = np.linspace(0.0, 1.0, len(seconds(2.0)), dtype=np.float32)
    y = ramp * noise(2.0, amp=0.3)
    image = draw(y, "waveplot", style)
    drawn = (image == ai.hex_rgb(style.waveform).astype(np.uint8)).all(-1)
    heights = drawn.sum(0) / SIZE
    env = np.array([np.abs(c).max() for c in np.array_split(y, SIZE)])
    assert corr(heights, env / env.max()) > 0.95
    assert drawn.sum(0).max() == SIZE, "the loudest column reaches top and bottom (full-bleed)"
    assert (drawn == drawn[::-1]).all(), "the envelope is symmetric about the centre line"


@pytest.mark.parametrize("representation", ["mfcc", "mfcc_scaled"])
@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
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


@pytest.mark.parametrize("representation", REPRESENTATIONS)
@pytest.mark.parametrize("case", ["silence", "short", "non_finite", "single_sample"])
@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
def test_degenerate_audio_gives_a_valid_image(representation, case, mapping, style):
    y = {
        "silence": np.zeros(SR, np.float32),
        "short": tone(440.0, d=0.01),  # 220 samples < n_fft
        "non_finite": np.where(np.arange(SR) % 97 == 0, np.nan, tone(440.0, d=1.0)).astype(np.float32),
        "single_sample": np.ones(1, np.float32),
    }[case]
    if case == "non_finite":
        y[5] = np.inf
        y[7] = -np.inf
    image = draw(y, representation, style, mapping=mapping)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
def test_non_finite_samples_render_as_zeros(mapping, style):
    y = tone(440.0, d=1.0)
    bad = y.copy()
    bad[::101] = np.nan
    zeroed = y.copy()
    zeroed[::101] = 0.0
    for representation in REPRESENTATIONS:
        np.testing.assert_array_equal(draw(bad, representation, style, mapping=mapping),
                                      draw(zeroed, representation, style, mapping=mapping))


def test_clean_audio_pads_short_audio_and_counts_non_finite():
    y, n_bad = ai.clean_audio(np.array([np.nan, 1.0, np.inf], np.float32), n_fft=8)
    assert n_bad == 2 and len(y) == 8 and np.isfinite(y).all()


@pytest.mark.parametrize("mapping", ai.PIXEL_MAPPINGS)
def test_render_is_deterministic(mapping, style):
    y = chirp(d=1.0) + noise(1.0)
    for representation in REPRESENTATIONS:
        np.testing.assert_array_equal(draw(y, representation, style, mapping=mapping),
                                      draw(y, representation, style, mapping=mapping))


def test_unknown_representation_is_a_one_line_error_listing_the_six(style):
    with pytest.raises(PipelineError) as err:
        draw(tone(440.0, d=0.5), "spectrogram", style)
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in REPRESENTATIONS)


# ------------------------------------------------------------------------------------------ loading


def test_load_audio_mixes_down_and_resamples(tmp_path):
    left = tone(440.0, d=0.5)
    stereo = np.stack([left, -left], axis=1)  # opposite channels cancel in the mixdown
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, SR, subtype="PCM_16")
    y, n_bad = ai.load_audio(str(path), 44100)
    assert n_bad == 0 and abs(len(y) - 2 * len(left)) <= 2
    assert np.abs(y).max() < 1e-3

    sf.write(tmp_path / "mono.wav", left, SR, subtype="PCM_16")
    y, _ = ai.load_audio(str(tmp_path / "mono.wav"), 44100)
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 44100 / len(y) - 440.0) < 5  # the tone survives resampling


def test_load_audio_counts_and_replaces_non_finite_float_samples(tmp_path):
    y = tone(440.0, d=0.2)
    y[10] = np.nan
    y[20] = np.inf
    sf.write(tmp_path / "float.wav", y, SR, subtype="FLOAT")
    out, n_bad = ai.load_audio(str(tmp_path / "float.wav"), SR)
    assert n_bad == 2 and np.isfinite(out).all() and out[10] == 0.0


@pytest.mark.parametrize("case, reason", [("missing", "missing_file"), ("empty", "empty_file"),
                                          ("garbage", "unreadable_audio")])
def test_load_audio_bad_files_raise_with_a_reason(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"RIFF\x00\x00this is not a wav file" * 10)
    with pytest.raises(ClipFailure) as err:
        ai.load_audio(str(path), SR)
    assert err.value.reason == reason
