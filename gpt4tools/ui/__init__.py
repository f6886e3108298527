"""The user interfaces: the Gradio web app (web.py, webchat.py, tabs.py, jobs.py) and the
terminal chat (terminal.py). The top layer: nothing outside ui/ imports it, except the CLI."""

import os

# Before gradio is imported: no analytics, version checks or hub telemetry (the app works offline).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
