"""`tfrec-video prepare`: raw event logs to training data, on Apache Beam (local by default).

    tfrec-video prepare --events 'logs/*.parquet' --catalog videos.csv --out data/ \\
        --split time --test-from 2026-11-01 --validation-fraction 0.05

    # the same on a cluster: any Beam runner, with its standard pipeline options
    tfrec-video prepare --events 'gs://bucket/logs/*.parquet' --catalog gs://bucket/videos.parquet \\
        --out gs://bucket/data --split time --test-from 2026-11-01 \\
        --runner DataflowRunner --project my-project --region europe-west1 --temp_location gs://bucket/tmp

It writes `catalog/`, `train/`, `validation/`, `test/`, `prepare_report.json`
and `run_config.yaml`, whose `data:` section `tfrec-video train --config
OUT/run_config.yaml` reads (`tfrec_video.preparation`). Options this command
does not know are passed to Beam as pipeline options.
"""

import json

from tfrec_video.cli.refresh_catalog import _positive_int
from tfrec_video.preparation.negatives import SAMPLING
from tfrec_video.preparation.pipeline import OUTPUT_FORMATS, REPORT_FILE, RUN_CONFIG_FILE, PrepareConfig, prepare
from tfrec_video.preparation.runner import RUNNERS
from tfrec_video.preparation.splits import SPLIT_KINDS, SplitRule



def add_cli(subparsers) -> None:
    """Registers `prepare` on the `tfrec-video` command line."""
    p = subparsers.add_parser(
        "prepare", help="turn raw event logs into train/validation/test tables (Apache Beam, local or a cluster)",
        description="Build the package's tables from an event log (user_id, video_id, timestamp, and optionally "
                    "clicked, hour, device) and a video table: each row's watch history as of its time (strictly "
                    "earlier events, newest first), negatives for logs of positives only, and a time, "
                    "leave-one-out or random split. Unknown options are Beam pipeline options.")
    p.add_argument("--events", required=True, nargs="+", metavar="GLOB",
                   help="the event log: Parquet or CSV files, directories or glob patterns")
    p.add_argument("--catalog", required=True, nargs="+", metavar="GLOB",
                   help="the video table (TFRecord, Parquet or CSV); every event's video must be in it")
    p.add_argument("--out", required=True, metavar="DIR", help="the output directory (absent or empty)")
    p.add_argument("--split", choices=SPLIT_KINDS, default="time", help="how events are split (default: time)")
    p.add_argument("--test-from", metavar="TIME",
                   help="--split time: the first test time (ISO 8601, e.g. 2026-11-01, UTC; or epoch seconds)")
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="time: the latest fraction of the training period held out; random: the probability of "
                        "an event being validation (leave-one-out always holds out each user's second-last)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="--split random: an event's test probability")
    p.add_argument("--negatives", type=int, default=None,
                   help="negatives per event for a log without 'clicked' (default 4; a log with 'clicked' has its own)")
    p.add_argument("--negative-sampling", choices=SAMPLING, default="popularity",
                   help="negatives by training-split popularity (default) or uniformly over the catalog")
    p.add_argument("--history-length", type=_positive_int, default=20, help="the most videos a history holds")
    p.add_argument("--max-events-per-user", type=_positive_int, default=100_000,
                   help="a user's latest events kept (the rest are counted in the report and dropped)")
    p.add_argument("--drop-unknown", action="store_true",
                   help="drop events of videos not in the catalog (counted in the report) instead of failing")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="parquet", help="the output tables' format")
    p.add_argument("--num-shards", type=_positive_int, default=None,
                   help="files per split, each one bucket of users (default: about one per 100,000 events)")
    p.add_argument("--seed", type=int, default=0, help="seeds the negatives and the random split")
    p.add_argument("--image-dim", type=_positive_int, default=1024, help="the catalog's image_embedding width")
    p.add_argument("--audio-dim", type=_positive_int, default=128, help="the catalog's audio_embedding width")
    p.add_argument("--runner", choices=RUNNERS, default="DirectRunner",
                   help="the Beam runner (default: in-process, no service needed)")
    # pipeline_options: `tfrec_video.cli.main` hands the options this parser does not know to Beam.
    p.set_defaults(func=run_cli, pipeline_options=True)


def run_cli(args) -> int:
    """Handler of `tfrec-video prepare`: runs the pipeline and prints the split sizes."""
    split = SplitRule(args.split, test_from=args.test_from, validation_fraction=args.validation_fraction,
                      test_fraction=args.test_fraction, seed=args.seed)
    config = PrepareConfig(events=args.events, catalog=args.catalog, out=args.out, split=split,
                           history_length=args.history_length, negatives=args.negatives,
                           negative_sampling=args.negative_sampling, format=args.format,
                           num_shards=args.num_shards, max_events_per_user=args.max_events_per_user,
                           drop_unknown=args.drop_unknown, seed=args.seed, image_dim=args.image_dim,
                           audio_dim=args.audio_dim)
    report = prepare(config, [f"--runner={args.runner}", *getattr(args, "pipeline_args", [])])
    sizes = ", ".join(f"{name} {s['rows']} rows" for name, s in report["splits"].items())
    log = report["log"]
    print(f"prepared {args.out}: {log['events']} events of {log['users']} users -> {sizes} "
          f"({report['seconds']:.1f} s on {report['runner']})")
    dropped = {k: log[k] for k in ("dropped_unknown", "dropped_over_cap", "negatives_short") if log.get(k)}
    if dropped:
        print(f"dropped: {json.dumps(dropped)}")
    print(f"report: {args.out.rstrip('/')}/{REPORT_FILE}; train with: tfrec-video train --config "
          f"{args.out.rstrip('/')}/{RUN_CONFIG_FILE} --output-dir runs/first")
    return 0
