"""`tfrec-video embed`: raw thumbnails, audio and titles into `image_embedding` / `audio_embedding` /
`title_embedding` features.

    tfrec-video embed --catalog media.csv --image-model mobilenet.tflite --out emb.parquet
    tfrec-video embed --catalog media.csv --audio-model yamnet_spectra_in.tflite --out emb.parquet
    tfrec-video embed --text-model encoders/e5_small --titles data/catalog/ --out title_emb.parquet

    # the same on Apache Beam: several local workers, or a cluster (options it does not know go to Beam)
    tfrec-video embed --catalog media.csv --image-model mobilenet.tflite --out emb.parquet \\
        --runner DirectRunner --direct_num_workers=4 --direct_running_mode=multi_processing
    tfrec-video embed --catalog gs://bucket/media.csv --image-model gs://bucket/mobilenet.tflite \\
        --out gs://bucket/emb.parquet --runner DataflowRunner --project=my-project --region=europe-west1 \\
        --temp_location gs://bucket/tmp

The work is `tfrec_video.media_embedding.step.run_embed`; this module is its flags.
"""

import logging

from tfrec_video.preparation.runner import RUNNERS
from tfrec_video.cli.run_dir import check_output_dir
from tfrec_video.errors import ConfigError
from tfrec_video.media_embedding.step import run_embed


def add_cli(subparsers) -> None:
    """Registers `embed` on the `tfrec-video` command line."""
    p = subparsers.add_parser(
        "embed", help="turn raw thumbnails, audio and titles into image_embedding / audio_embedding / "
                      "title_embedding features",
        description="Embed the thumbnails and audio listed in a media CSV (video_id,thumbnail_path,audio_path; "
                    "paths relative to the CSV) with pretrained encoders (TF Hub handle, SavedModel directory or "
                    ".tflite file; a .tflite audio model may take log-mel patches, as YAMNet's "
                    "yamnet_spectra_in.tflite does), and titles with a pretrained text encoder (a SavedModel "
                    "taking strings, e.g. from tfrec-video convert-text-encoder), into a sharded table that "
                    "training reads directly. Re-running resumes. With --runner, the shards are embedded by an "
                    "Apache Beam pipeline (several local workers, or a cluster), into the same output; options "
                    "this command does not know are then Beam pipeline options.")
    p.add_argument("--catalog", metavar="CSV",
                   help="the media CSV (needed with --image-model / --audio-model; with --text-model it may carry "
                        "a title column)")
    p.add_argument("--image-model", metavar="MODEL", help="image encoder: hub URL, SavedModel dir or .tflite")
    p.add_argument("--audio-model", metavar="MODEL", help="audio encoder: hub URL, SavedModel dir or .tflite")
    p.add_argument("--text-model", metavar="MODEL",
                   help="title encoder: hub URL or SavedModel dir (string [batch] -> [batch, dim]); writes "
                        "title_embedding")
    p.add_argument("--titles", metavar="TABLE",
                   help="catalog table (CSV, Parquet or TFRecord; file, directory or glob) whose video_id,title "
                        "are embedded by --text-model, instead of the media CSV's title column")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output table directory, by extension: emb.parquet, emb.tfrecord, emb.tfrecord.gz")
    p.add_argument("--batch-size", type=int, default=32, help="images or titles per encoder call")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per output shard (the unit of resuming)")
    p.add_argument("--zero-fill", action="store_true",
                   help="write zeros for missing or broken media instead of leaving the video out")
    p.add_argument("--image-size", type=int, help="image size for a hub model that does not declare one")
    p.add_argument("--image-range", default="auto", metavar="LOW,HIGH",
                   help="float pixel range a .tflite image model takes: auto (default) or e.g. -1,1")
    p.add_argument("--image-output-key", help="output of a hub image model with several (dict key or index)")
    p.add_argument("--audio-sample-rate", type=int, default=16000, help="the audio model's sample rate")
    p.add_argument("--audio-clip-seconds", type=float, default=1.0, help="frame length of a hub audio model")
    p.add_argument("--audio-output-key", help="output of a hub audio model with several (hub YAMNet: 1), or a "
                                              ".tflite model's output index")
    p.add_argument("--audio-output-tensor", metavar="NAME",
                   help="tensor of a .tflite audio model read as the embedding, intermediate ones included (default: "
                        "a known embedding tensor such as YAMNet's tower0/network/layer28/reduce_mean, else the "
                        "model's output)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--runner", choices=RUNNERS,
                   help="embed on Apache Beam with this runner (DirectRunner: workers on this machine; a cluster's "
                        "runner needs --out, the models and the media where every worker reads them, e.g. gs://); "
                        "default: in this process, or DirectRunner when Beam options are given. Resumes, and is "
                        "resumed by, a run without it")
    # pipeline_options: `tfrec_video.cli.main` hands the options this parser does not know to Beam.
    p.set_defaults(func=_run_cli, pipeline_options=True)


def _key(value):
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


def _run_cli(args) -> int:
    image_range = args.image_range
    if image_range != "auto":
        try:
            image_range = tuple(float(v) for v in image_range.split(","))
            assert len(image_range) == 2
        except (ValueError, AssertionError):
            raise ConfigError(f"--image-range must be auto or LOW,HIGH, got {args.image_range!r}.") from None
    check_output_dir(args.out, "--out")  # before the encoders load
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = run_embed(args.catalog, args.out, image_model=args.image_model, audio_model=args.audio_model,
                        batch_size=args.batch_size, shard_size=args.shard_size, zero_fill=args.zero_fill,
                        image_size=args.image_size, image_range=image_range,
                        image_output_key=_key(args.image_output_key), audio_sample_rate=args.audio_sample_rate,
                        audio_clip_seconds=args.audio_clip_seconds, audio_output_key=_key(args.audio_output_key),
                        audio_output_tensor=args.audio_output_tensor, progress=not args.quiet,
                        text_model=args.text_model, titles=args.titles, runner=args.runner,
                        pipeline_args=getattr(args, "pipeline_args", []))
    print(summary.describe())
    return 0
