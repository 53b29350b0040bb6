"""Hypothesis profiles: ``default`` draws new examples on every run (and
``make fuzz`` runs the long campaign); ``ci`` (HYPOTHESIS_PROFILE=ci, set by
.ci/run) draws the same examples every time, so a submission is judged on
what was run before it."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
