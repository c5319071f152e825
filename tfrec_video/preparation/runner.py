"""`run_pipeline`: how `tfrec-video prepare` and `tfrec-video embed --runner` run a Beam pipeline.

* **In process by default.** `"DirectRunner"` runs on Beam's `FnApiRunner`,
  in this process (`--direct_num_workers`, `--direct_running_mode` apply).
  Beam's own `DirectRunner` first tries the Prism runner, a binary it
  downloads from GitHub; that is a download and a service the default must not
  need, so it is bypassed.
* **Any other runner** (`FlinkRunner`, `SparkRunner`, `DataflowRunner`, ...)
  gets the options as given: the same pipeline definition on a cluster.
* **Options are checked.** An option no Beam options class knows (a typo such
  as `--shard_size 10`, which Beam would discard with a warning and run
  anyway) is a `ConfigError` naming it.
* **Errors are ours.** A `DataValidationError` or `ConfigError` raised in a
  worker reaches the caller as itself, without the runner's
  `[while running '...']` suffix, and without the worker traceback Beam logs
  before re-raising it (`quiet_beam_logs`).

Example:

>>> import apache_beam as beam                                          # doctest: +SKIP
>>> run_pipeline(lambda p: p | beam.Create([1, 2]) | beam.Map(print), "DirectRunner",
...              ["--direct_num_workers=2"])                            # doctest: +SKIP
'DirectRunner'
"""

import contextlib
import logging
from typing import Callable, Optional, Sequence

from tfrec_video.errors import ConfigError, DataValidationError

RUNNERS = ("DirectRunner", "FlinkRunner", "SparkRunner", "DataflowRunner", "PrismRunner", "PortableRunner")
IN_PROCESS = "DirectRunner"


@contextlib.contextmanager
def quiet_beam_logs():
    """Beam's import notes (missing GCP clients) and the worker tracebacks it logs before re-raising."""
    loggers = [logging.getLogger(), logging.getLogger("apache_beam.runners.common")]
    levels = [logger.level for logger in loggers]
    loggers[0].setLevel(max(levels[0], logging.ERROR))
    loggers[1].setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def runner_name(runner: Optional[str], args: Sequence[str] = ()) -> str:
    """`runner`, else the `--runner` among `args`, else `"DirectRunner"`."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = runner or arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = runner or args[i + 1]
    return runner or IN_PROCESS


def _without_runner(args: Sequence[str]):
    args, out, skip = list(args), [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--runner":
            skip = True
        elif not arg.startswith("--runner="):
            out.append(arg)
    return out


def pipeline_options(runner: Optional[str], args: Sequence[str] = ()):
    """Beam `PipelineOptions` from `args` with the runner set (`runner_name`); an option Beam does not know
    is a `ConfigError`."""
    with quiet_beam_logs():  # Importing Beam logs notes about cloud clients.
        from apache_beam.options.pipeline_options import PipelineOptions

        options = PipelineOptions(_without_runner(args) + [f"--runner={runner_name(runner, args)}"])
        known = options.get_all_options(retain_unknown_options=False)
        every = options.get_all_options(retain_unknown_options=True)
    unknown = sorted(set(every) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join('--' + u for u in unknown)}: neither this command's nor a "
                          "Beam pipeline option (apache_beam.options.pipeline_options lists Beam's)")
    return options


def _bare(cls, message: str) -> BaseException:
    """A `cls` error holding `message` as it is (its file, row and feature already written into it)."""
    clean = ValueError.__new__(cls)
    ValueError.__init__(clean, message)
    clean.reason, clean.file, clean.row, clean.line, clean.feature, clean.expected = message, *([None] * 5)
    return clean


def unwrapped(error: BaseException) -> BaseException:
    """Our own error as a worker raised it: without the runner's `[while running '...']` suffix, and out of
    the `RuntimeError` that multi-worker runners wrap a worker's traceback in; other errors as they are.

    What survives a runner is the message, which names the file, row and feature: the attributes do not
    (Beam re-creates the exception from its text). Transforms that need them send errors as data instead
    (`prepare`'s reading step does).
    """
    for cls in (DataValidationError, ConfigError):
        text = str(error)
        if not isinstance(error, cls):
            marker = f"{cls.__module__}.{cls.__name__}: "
            at = text.rfind(marker)
            if at < 0:
                continue
            text = text[at + len(marker):].split("\n", 1)[0]
        cut = text.find(" [while running")
        return _bare(cls, text[:cut] if cut > 0 else text)
    return error


def run_pipeline(build: Callable, runner: Optional[str] = None, args: Sequence[str] = ()) -> str:
    """Builds the pipeline with `build(pipeline)`, runs it to the end and returns the runner's name.

    Raises:
      ConfigError: an unknown option; or one a worker raised.
      DataValidationError: one a worker raised (bad input), as itself.
    """
    options = pipeline_options(runner, args)
    name = runner_name(runner, args)
    with quiet_beam_logs():
        import apache_beam as beam

        in_process = None
        if name == IN_PROCESS:
            from apache_beam.runners.portability.fn_api_runner import FnApiRunner

            in_process = FnApiRunner()
        try:
            with beam.Pipeline(runner=in_process, options=options) as pipeline:
                build(pipeline)
        except Exception as error:
            ours = unwrapped(error)
            if ours is error:
                raise
            raise ours from None
    return name
