"""The `fusion` command line (entry point `fusion.cli:app`, also `python -m fusion`).

  app        the Typer app, its one error handler, the order of `fusion --help`
  options    options several commands share (--workspace, --profile, --set, ...)
  output     the error console, logging, progress bars, tables of means
  workspace  init
  nightly    run, schedule show|serve|deploy (the nightly Prefect flow)
  train      train, sweep
  evaluate   evaluate
  fuse       fuse
  runs       report, reproduce, sync (tracked MLflow runs)
  models     models, import-weights
  data       data ... (the preparation stages, sources, fetch, materialize)

Commands parse options and print; the work is in the core modules they call.
"""

from fusion.cli.app import app

__all__ = ["app"]
