"""The module paths of tfrec_video 0.1, kept importable for one release with a `DeprecationWarning`.

The package was reorganised into layers (`data`, `datasets`, `evaluation`,
`features`, `towers`, `models`, `serving`, `training`, `media_embedding`, `cli`).
Code written against the old flat modules keeps working until `REMOVED_IN`:

>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:   # doctest: +SKIP
...     warnings.simplefilter("always")
...     from tfrec_video.export import export_saved_model
>>> caught[0].message                                       # doctest: +SKIP
DeprecationWarning('tfrec_video.export moved to tfrec_video.serving.export; ...')

An old path is an alias, not a copy: `tfrec_video.export` *is* the module
`tfrec_video.serving.export`, so its classes and functions are the same
objects. `tfrec_video.data.io`, which was split in two, is a module holding
the public names of both halves. `python -m tfrec_video.train ...` still runs
`tfrec-video train ...`. `tfrec_video.training`, `tfrec_video.evaluation` and
`tfrec_video.cli` are packages now and export the names the old modules had,
so they need no alias.

`install()` (called by `import tfrec_video`) puts the finder on `sys.meta_path`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

REMOVED_IN = "0.3.0"

# Old module -> the module(s) that hold its code now.
MOVED = {
    "tfrec_video.callbacks": ("tfrec_video.training.callbacks",),
    "tfrec_video.data.io": ("tfrec_video.data.files", "tfrec_video.data.tables"),
    "tfrec_video.datasets.media": ("tfrec_video.datasets.builtin.media",),
    "tfrec_video.datasets.truth": ("tfrec_video.datasets.builtin.truth",),
    "tfrec_video.evaluate_export": ("tfrec_video.cli.evaluate",),
    "tfrec_video.export": ("tfrec_video.serving.export",),
    "tfrec_video.exported": ("tfrec_video.serving.loaded",),
    "tfrec_video.metrics": ("tfrec_video.evaluation.metrics",),
    "tfrec_video.plots": ("tfrec_video.evaluation.plots",),
    "tfrec_video.quickstart": ("tfrec_video.cli.quickstart",),
    "tfrec_video.scann_retrieval": ("tfrec_video.serving.scann",),
    "tfrec_video.schema": ("tfrec_video.data.schema",),
    "tfrec_video.train": ("tfrec_video.cli.train",),
    "tfrec_video.train_config": ("tfrec_video.training.run_config",),
}
# Old modules that `python -m` ran, and the `tfrec-video` command each one was.
RUN_AS_COMMAND = {"tfrec_video.train": "train"}


def message(old: str) -> str:
    """The warning for an import of `old`."""
    return (f"{old} moved to {' and '.join(MOVED[old])}; import it from there. "
            f"The old path will be removed in tfrec_video {REMOVED_IN}.")


def _stacklevel() -> int:
    """The `stacklevel` of the code that imported the old path, for a warning raised in `create_module`.

    `warnings` itself skips importlib's `_bootstrap` frames when counting, so only the other frames
    between `create_module` and the importing code (this module's, `importlib.import_module`) count.
    """
    frame, level = sys._getframe(2), 1  # _getframe(1) is create_module: stacklevel 1
    while frame is not None:
        name = frame.f_code.co_filename
        internal = "importlib" in name and "_bootstrap" in name
        if not internal and name != __file__ and frame.f_globals.get("__name__") != "importlib":
            return level + 1
        level += 0 if internal else 1
        frame = frame.f_back
    return level


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names of `MOVED` and loads each as its new module (see the module docstring)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        # The new module's file as the origin: `python -m OLD` puts it in sys.argv[0].
        return importlib.util.spec_from_loader(fullname, self, origin=importlib.util.find_spec(MOVED[fullname][0]).origin)

    def create_module(self, spec):
        warnings.warn(message(spec.name), DeprecationWarning, stacklevel=_stacklevel())
        modules = [importlib.import_module(name) for name in MOVED[spec.name]]
        if len(modules) == 1:
            return modules[0]
        merged = types.ModuleType(spec.name, f"Deprecated: the public names of {', '.join(MOVED[spec.name])}.")
        for module in modules:
            merged.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
        return merged

    def exec_module(self, module):
        pass  # the new module already ran; the alias adds nothing

    def get_code(self, fullname):
        """What `python -m OLD` runs: `python -m tfrec_video COMMAND`, for an old module that was a command.

        runpy asks for the code just before it runs it as `__main__`, with `sys.argv[1:]` already the
        user's arguments, so the command's name goes in front of them here.
        """
        if fullname not in RUN_AS_COMMAND:
            return None
        command = RUN_AS_COMMAND[fullname]
        warnings.warn(f"python -m {fullname} is deprecated: run `python -m tfrec_video {command}` or "
                      f"`tfrec-video {command}`. It will be removed in tfrec_video {REMOVED_IN}.",
                      DeprecationWarning, stacklevel=2)
        sys.argv.insert(1, command)
        main = importlib.util.find_spec("tfrec_video.__main__")
        return main.loader.get_code(main.name)


def install() -> None:
    """Adds the finder to `sys.meta_path` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
