"""`tfrec-video embed --runner`: the shards embedded by an Apache Beam pipeline (`media_embedding.beam_embed`).

The media of the other embed tests (`test_embedding_step`: the tiny SavedModel image and audio encoders, PNG
thumbnails, WAV tones; `text_model_fixture`'s title encoder), with broken and missing items and one shard that
loses all its rows. Against the in-process run of the same inputs: the same shard files byte for byte, the same
`_embed_state.json` and the same summary, whatever the runner's workers; a killed Beam run resumes (from its
workers' markers) on Beam or in process and redoes only the unfinished shard; another run's state or markers are
not reused; and the output may be a `tf.io.gfile` path.
"""

import dataclasses
import json
import logging
import os
import shutil
import uuid

import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from tfrec_video.cli import main
from tfrec_video.errors import ConfigError
from tfrec_video.media_embedding import run_embed
from tfrec_video.media_embedding import shards as embed_shards
from tfrec_video.media_embedding import step as embed_step
from test_embedding_step import _band_energies, _image_features, _save_encoder, _solid_png, _tone, _write_wav

RATE = 16000
SHARD_SIZE = 2
THREADS = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]


@pytest.fixture(scope="module")
def media(tmp_path_factory, text_model):
    """The media CSV (relative paths, a title column) and the models: 7 videos in 4 shards of 2, the second
    shard left empty (a broken thumbnail, a missing audio track)."""
    root = tmp_path_factory.mktemp("media")
    image = _save_encoder(root / "image", _image_features, tf.TensorSpec([None, 32, 32, 3], tf.float32))
    audio = _save_encoder(root / "audio", _band_energies, tf.TensorSpec([None, RATE], tf.float32))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
    lines = ["video_id,thumbnail_path,audio_path,title"]
    for i in range(7):
        _solid_png(root / f"v{i}.png", colours[i % 3], noise=8, seed=i)
        _write_wav(root / f"v{i}.wav", _tone(300 + 500 * i))
        thumbnail, clip = {2: ("broken.jpg", f"v{i}.wav"), 3: (f"v{i}.png", "")}.get(i, (f"v{i}.png", f"v{i}.wav"))
        lines.append(f"v{i},{thumbnail},{clip},video number {i} {'cats' if i % 2 else 'goals'}")
    (root / "media.csv").write_text("\n".join(lines) + "\n")
    return {"catalog": str(root / "media.csv"), "image_model": image, "audio_model": audio, "text_model": text_model}


def _embed(media, out, **kwargs):
    return run_embed(media["catalog"], str(out), image_model=media["image_model"], audio_model=media["audio_model"],
                     text_model=media["text_model"], shard_size=SHARD_SIZE, batch_size=2, progress=False, **kwargs)


def _counts(summary):
    return {k: v for k, v in dataclasses.asdict(summary).items() if k != "out"}


def _files(out):
    """`{relative path: bytes}` of every file under `out` (local or `tf.io.gfile`)."""
    found = {}
    for directory, _, names in tf.io.gfile.walk(str(out)):
        for name in names:
            path = f"{directory.rstrip('/')}/{name}"
            with tf.io.gfile.GFile(path, "rb") as f:
                found[path[len(str(out)):].lstrip("/")] = f.read()
    return found


@pytest.fixture(scope="module")
def reference(media, tmp_path_factory):
    """The in-process run: its summary and files."""
    out = tmp_path_factory.mktemp("reference") / "emb.parquet"
    summary = _embed(media, out)
    assert (summary.shards_written, summary.written, summary.left_out) == (4, 5, 2)
    assert (summary.failed_thumbnail, summary.missing_audio, summary.title_dim) == (1, 1, 8)
    return summary, _files(out)


def test_direct_runner_writes_the_in_process_run_byte_for_byte(media, reference, tmp_path, capsys, caplog):
    summary, files = reference
    assert sorted(files) == ["_embed_state.json", "part-00000.parquet", "part-00002.parquet", "part-00003.parquet"]
    beam = _embed(media, tmp_path / "beam.parquet", runner="DirectRunner")
    assert _counts(beam) == _counts(summary)
    assert _files(tmp_path / "beam.parquet") == files  # no marker left behind either

    # The command line, two worker threads.
    out = tmp_path / "threads.parquet"
    with caplog.at_level(logging.INFO, logger="tfrec_video.embed"):
        assert main(["embed", "--catalog", media["catalog"], "--image-model", media["image_model"],
                     "--audio-model", media["audio_model"], "--text-model", media["text_model"], "--out", str(out),
                     "--shard-size", str(SHARD_SIZE), "--batch-size", "2", "--runner", "DirectRunner", *THREADS]) == 0
    assert "4 shards to embed on --runner=DirectRunner" in caplog.text
    assert capsys.readouterr().out.strip() == summary.describe().replace(summary.out, str(out))
    assert _files(out) == files


@pytest.mark.parametrize("resume_with", ["DirectRunner", None])
def test_a_killed_beam_run_resumes_from_its_markers_and_redoes_only_the_unfinished_shard(
        media, reference, tmp_path, monkeypatch, resume_with):
    summary, files = reference
    out = tmp_path / "emb.parquet"
    # A Beam run whose driver died before folding its workers' markers: every shard's marker is there, and the
    # state is as the run saved it before its pipeline. Shard 2 was still being embedded: no file, no marker.
    with monkeypatch.context() as patch:
        patch.setattr(embed_step, "remove_markers", lambda *args: None)
        _embed(media, out, pipeline_args=THREADS)  # Beam options alone: DirectRunner
    assert sorted(os.listdir(out / "_embed_done")) == ["0.json", "1.json", "2.json", "3.json"]
    state = json.loads((out / "_embed_state.json").read_text())
    state["shards"] = {}
    (out / "_embed_state.json").write_text(json.dumps(state))
    (out / "part-00002.parquet").unlink()
    (out / "_embed_done" / "2.json").unlink()
    (out / "_embed_done" / "2.json.tmp-0123456789ab").write_text("half a marker")  # ignored
    (out / "_embed_rows-0123456789ab.jsonl").write_text("[]\n")  # the rows file of the killed run: removed
    kept = {p: (out / p).stat().st_mtime_ns for p in ("part-00000.parquet", "part-00003.parquet")}

    again = _embed(media, out, runner=resume_with)
    assert (again.shards_skipped, again.shards_written, again.written) == (3, 1, summary.written)
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept
    (out / "_embed_done" / "2.json.tmp-0123456789ab").unlink()
    assert _files(out) == files


def test_a_beam_run_that_fails_in_a_worker_keeps_its_finished_shards(media, reference, tmp_path):
    summary, files = reference
    root = tmp_path / "media"
    shutil.copytree(os.path.dirname(media["catalog"]), root)

    def picky(images):  # _image_features, but an all-white thumbnail is an error (not a broken file)
        white = tf.reduce_any(tf.reduce_min(images, [1, 2, 3]) > 0.99)
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(white), ["a white thumbnail"])]):
            return tf.identity(_image_features(images))

    model = _save_encoder(tmp_path / "picky", picky, tf.TensorSpec([None, 32, 32, 3], tf.float32))
    original = (root / "v4.png").read_bytes()  # shard 2
    (root / "v4.png").write_bytes(tf.io.encode_png(tf.fill([40, 40, 3], tf.constant(255, tf.uint8))).numpy())
    media = dict(media, catalog=str(root / "media.csv"), image_model=model)
    out = tmp_path / "emb.parquet"
    with pytest.raises(Exception, match="a white thumbnail"):
        _embed(media, out, runner="DirectRunner")
    # What the workers finished before the failure (the order is the runner's) is marked, and kept.
    done = sorted(int(name[:-len(".json")]) for name in os.listdir(out / "_embed_done"))
    assert 2 not in done and all((out / f"part-{i:05d}.parquet").exists() for i in done if i != 1)
    (root / "v4.png").write_bytes(original)
    again = _embed(media, out, runner="DirectRunner")
    assert (again.shards_skipped, again.shards_written) == (len(done), 4 - len(done))
    assert again.written == summary.written
    got = _files(out)
    assert {k: v for k, v in got.items() if k.startswith("part-")} == {k: v for k, v in files.items()
                                                                        if k.startswith("part-")}
    assert json.loads(got["_embed_state.json"])["shards"] == json.loads(files["_embed_state.json"])["shards"]


def test_another_runs_state_or_markers_are_not_reused(media, reference, tmp_path, caplog):
    summary, files = reference
    out = tmp_path / "emb.parquet"
    _embed(media, out, runner="DirectRunner")
    with pytest.raises(ConfigError, match=r"holds shards of another embedding run \(zero_fill differ"):
        _embed(media, out, runner="DirectRunner", zero_fill=True)
    # A marker another run left (rows 0: "nothing to write") must not stand for shard 0 of this one.
    embed_shards.write_marker(str(out), 0, 0, {}, run="another run")
    state = json.loads((out / "_embed_state.json").read_text())
    del state["shards"]["0"]
    (out / "_embed_state.json").write_text(json.dumps(state))
    (out / "part-00000.parquet").unlink()
    with caplog.at_level(logging.WARNING, logger="tfrec_video.embed"):
        again = _embed(media, out, runner="DirectRunner")
    assert (again.shards_skipped, again.shards_written) == (3, 1)
    assert "another embedding run wrote it" in caplog.text
    assert _files(out) == files  # the worker's own marker replaced the foreign one, and was folded


def test_the_output_may_be_a_gfile_path(media, reference, tmp_path):
    _, files = reference
    out = f"ram://{uuid.uuid4().hex}/emb.parquet"
    first = _embed(media, out, runner="DirectRunner")
    assert first.shards_written == 4 and _files(out) == files
    tf.io.gfile.remove(f"{out}/part-00003.parquet")
    again = _embed(media, out)  # resumed in process
    assert (again.shards_skipped, again.shards_written) == (3, 1) and _files(out) == files
